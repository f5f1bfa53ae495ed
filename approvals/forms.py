"""Forms for the policy admin: YAML validated with line and key, and the "try an intent" form."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from approvals.models import Policy
from approvals.policy_format import Intent, intent_parse, policy_parse
from gaitweb.lib.errors import InvalidInput
from gaitweb.lib.parsing import json_loads

SOURCE_MAX_CHARS = 256 * 1024


def _policy_errors(exc: InvalidInput) -> ValidationError:
    problems = exc.details.get("problems") or [{"message": exc.message}]
    return ValidationError([p["message"] for p in problems], code=exc.code)


class PolicyAdminForm(forms.ModelForm):
    """Edits a policy's YAML; saving creates a new version (approvals.policies.policy_save)."""

    source = forms.CharField(
        label="Policy YAML",
        widget=forms.Textarea(
            attrs={
                "rows": 28,
                "cols": 100,
                "spellcheck": "false",
                "style": "font-family: monospace",
            }
        ),
        max_length=SOURCE_MAX_CHARS,
        help_text="Gait policy format (docs/policy-format.md). Unknown or unsupported keys are refused with their line.",
    )

    class Meta:
        model = Policy
        fields = ["name", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.current if self.instance.pk else None
        if current is not None and not self.is_bound:
            self.fields["source"].initial = current.source

    def clean_source(self) -> str:
        source = self.cleaned_data["source"].replace("\r\n", "\n")
        try:
            policy_parse(source)
        except InvalidInput as exc:
            raise _policy_errors(exc) from None
        return source


class TryIntentForm(forms.Form):
    intent = forms.CharField(
        label="Intent (JSON)",
        widget=forms.Textarea(
            attrs={
                "rows": 16,
                "cols": 100,
                "spellcheck": "false",
                "style": "font-family: monospace",
            }
        ),
        max_length=64 * 1024,
        initial=json.dumps(
            {
                "tool_name": "tool.write",
                "args": {"path": "/tmp/out.txt"},
                "targets": [{"kind": "path", "value": "/tmp/out.txt"}],
                "context": {
                    "identity": "agent.example",
                    "risk_class": "high",
                    "workspace": "/srv/work",
                },
            },
            indent=2,
        ),
    )

    def clean_intent(self) -> Intent:
        text = self.cleaned_data["intent"]
        try:
            data = json_loads(text, what="the intent")
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                code="intent_invalid",
            ) from None
        except InvalidInput as exc:  # json_too_deep
            raise ValidationError(exc.message, code=exc.code) from None
        try:
            return intent_parse(data)
        except InvalidInput as exc:
            raise ValidationError(exc.message, code=exc.code) from None
