"""`manage.py check --deploy` (docs/operations.md, "HTTPS"): clean with the HTTPS settings
from the environment, run as a real subprocess the way an operator runs it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HTTPS_ENV = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "gaitweb.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "SECURE_COOKIES": "true",
}


def _check_deploy(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "GAIT_DATA_DIR": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(50),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_https_settings(tmp_path: Path) -> None:
    result = _check_deploy(tmp_path, HTTPS_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_gait_https_alone_turns_every_https_setting_on(tmp_path: Path) -> None:
    env = {"DEBUG": "false", "ALLOWED_HOSTS": "gaitweb.example.com", "GAIT_HTTPS": "true"}
    result = _check_deploy(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_names_what_is_missing_without_them(tmp_path: Path) -> None:
    result = _check_deploy(tmp_path, {"DEBUG": "false", "ALLOWED_HOSTS": "gaitweb.example.com"})
    assert result.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in result.stderr + result.stdout
