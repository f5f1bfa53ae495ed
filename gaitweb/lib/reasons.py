"""Every reason code gaitweb refuses or records with: the contract between gaitweb and
whoever reads its answers (docs/reason-codes.md gives each one's status and meaning; a test,
tests/test_docs_match_code.py, holds the two to the same list).

Raise with the constant, never with the string: ``raise NotFound(reasons.JOB_NOT_FOUND, …)``.
Each constant's docstring is its meaning, and the bracket its status: the HTTP status of a
refused request, ``event`` for a reason the journal records, ``verify`` for a problem a pack
verification reports, ``step`` for a step failure, ``gate`` for a gate's block reason.

A code built from a field name (``missing_reason``, ``invalid_limit``, ``q_too_long``) is a
template with ``<field>`` in it: ``reasons.for_field(reasons.FIELD_MISSING, "reason")``.
"""

from __future__ import annotations

FIELD = "<field>"


def for_field(template: str, field: str) -> str:
    """The code ``template`` names for ``field``: ``for_field(FIELD_MISSING, "reason")`` is
    ``missing_reason``."""
    return template.replace(FIELD, field)


# --- requests, authentication and input -----------------------------------------------------------


APIKEY_NOT_FOUND = "apikey_not_found"
"""no API key with prefix … [404]"""

BAD_REQUEST = "bad_request"
"""a request the API cannot parse (malformed JSON, wrong content type) [400]"""

CONFLICT = "conflict"
"""a concurrent submit conflicted; retry [409]"""

INTERNAL_ERROR = "internal_error"
"""an unexpected error: the server log has it (never a stack trace in the answer) [500]"""

AUTHENTICATION_FAILED = "authentication_failed"
"""the credentials were given but do not authenticate [401]"""

LOGIN_THROTTLED = "login_throttled"
"""too many failed dashboard or admin logins from this address or for this user: wait for the
cool-off (``Retry-After``) [429]"""

CSRF_FAILED = "csrf_failed"
"""a session-authenticated write without a valid CSRF token [403]"""

IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
"""an `Idempotency-Key` (or client `job_id`) reused with a different request body [409]"""

FIELD_INVALID = "invalid_<field>"
"""a malformed list filter or parameter (`invalid_created_after`, `invalid_limit`, …) [400]"""

INVALID_ARGUMENTS = "invalid_arguments"
"""the CLI's arguments do not parse (`gait … --help` lists them; exit 6, JSON with `--json`)
[400]"""

INVALID_API_KEY = "invalid_api_key"
"""the API key is unknown, revoked or malformed [401]"""

INVALID_CONTENT_LENGTH = "invalid_content_length"
"""the request's Content-Length header is not a number [400]"""

INVALID_CURSOR = "invalid_cursor"
"""the cursor is not one this API returned [400]"""

INVALID_FIELD = "invalid_field"
"""a field of the wrong type or length (`details.field` names it) [400]"""

INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
"""Idempotency-Key must be 1-… printable characters [400]"""

INVALID_IDENTITY = "invalid_identity"
"""an identity of 1-… characters is required [400]"""

INVALID_INPUT = "invalid_input"
"""a value is out of range for its field [400]"""

INVALID_JSON_VALUE = "invalid_json_value"
"""a value that must be JSON is not (or is not a JSON object where one is needed) [400]"""

INVALID_LIMIT = "invalid_limit"
"""limit must be a positive integer [400]"""

INVALID_SCOPES = "invalid_scopes"
"""an API key scope that does not exist [400]"""

INVALID_TIMEOUT = "invalid_timeout"
"""timeout_seconds must be from 0 to … [400]"""

JSON_TOO_DEEP = "json_too_deep"
"""JSON nested deeper than the limit (refused before parsing) [400]"""

FIELD_TOO_LONG = "<field>_too_long"
"""a text field longer than its limit (`q_too_long`, `identity_too_long`, …; `details.field`) [400]"""

METHOD_NOT_ALLOWED = "method_not_allowed"
"""the HTTP method is not one the endpoint takes [405]"""

FIELD_MISSING = "missing_<field>"
"""a required field is missing (`missing_reason`, …; `details.field`) [400]"""

MCP_IDENTITY_REQUIRED = "mcp_identity_required"
"""the MCP server acts as an API key (--api-key or GAIT_MCP_API_KEY) or an identity (--identity)
[400]"""

NAME_TOO_LONG = "name_too_long"
"""name is longer than … characters [400]"""

NOT_FOUND = "not_found"
"""no such URL [404]"""

NOT_ACCEPTABLE = "not_acceptable"
"""the `Accept` header asks for a type the API does not serve [406]"""

NOT_AUTHENTICATED = "not_authenticated"
"""no credentials: an API key (`Authorization: Bearer …`) or a session [401]"""

NUL_CHARACTER = "nul_character"
"""a NUL byte in a query, form field or body [400]"""

PAGE_SIZE_TOO_LARGE = "page_size_too_large"
"""limit … is larger than the maximum page size … [400]"""

PARSE_ERROR = "parse_error"
"""the body is not valid JSON (or multipart) [400]"""

PERMISSION_DENIED = "permission_denied"
"""the caller lacks the scope or role the action needs (`details.required_scope`) [403]"""

REQUEST_TOO_LARGE = "request_too_large"
"""a request body above `GAIT_REQUEST_MAX_BYTES` (4 MiB), refused by Content-Length before it is
read [413]"""

THROTTLED = "throttled"
"""too many requests for this key or client (`Retry-After`, `details.retry_after`) [429]"""

UNKNOWN_FIELD = "unknown_field"
"""an API body, query or MCP tool argument the operation does not take (`details.field` names it)
[400]"""

UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
"""a body of a content type the endpoint does not parse [415]"""

UPLOAD_TOO_LARGE = "upload_too_large"
"""a pack upload above `GAIT_UPLOAD_MAX_BYTES` (256 MiB), refused before it is spooled [413]"""

USER_NOT_FOUND = "user_not_found"
"""no user named … [404]"""

FIELD_UNREADABLE = "<field>_unreadable"
"""the CLI cannot find or read a file it was given (`spec_file_not_found`,
`revocations_unreadable`, …) (<field>_unreadable, <field>_file_not_found,
<field>_file_unreadable) [400]"""

FIELD_FILE_NOT_FOUND = "<field>_file_not_found"
"""the CLI cannot find or read a file it was given (`spec_file_not_found`,
`revocations_unreadable`, …) (<field>_unreadable, <field>_file_not_found,
<field>_file_unreadable) [400]"""

FIELD_FILE_UNREADABLE = "<field>_file_unreadable"
"""the CLI cannot find or read a file it was given (`spec_file_not_found`,
`revocations_unreadable`, …) (<field>_unreadable, <field>_file_not_found,
<field>_file_unreadable) [400]"""

YAML_ALIAS_REFUSED = "yaml_alias_refused"
"""a spec or policy uses YAML anchors or aliases: write the value out [400]"""

YAML_TOO_DEEP = "yaml_too_deep"
"""YAML nested deeper than the limit [400]"""


# --- jobs and their lifecycle ---------------------------------------------------------------------


ALREADY_APPROVED = "already_approved"
"""job … already has an approval for its current decision [409]"""

APPROVAL_REQUIRED = "approval_required"
"""resume check 2: the decision point has no approval that counts, or an approval request is
pending [422]"""

CHECKPOINT_NOT_FOUND = "checkpoint_not_found"
"""job … has no checkpoint … [404]"""

CONFIRMATION_REQUIRED = "confirmation_required"
"""an emergency stop must be confirmed: tick the box that says you mean it [400]"""

ENVIRONMENT_FINGERPRINT_MISMATCH = "environment_fingerprint_mismatch"
"""the environment differs from the one the job was submitted in [422]"""

IDENTITY_BINDING_MISMATCH = "identity_binding_mismatch"
"""… is bound to identity …, not … [422]"""

IDENTITY_REVOKED = "identity_revoked"
"""identity … is revoked [422]"""

INVALID_CHECKPOINT_TYPE = "invalid_checkpoint_type"
"""a step may add plan or progress checkpoints [400]"""

INVALID_JOB_ID = "invalid_job_id"
"""job ids are 1-128 characters of letters, digits and . _ : - and start with a letter or digit
[400]"""

INVALID_LABELS = "invalid_labels"
"""labels are key=value, got … [400]"""

INVALID_REVOCATIONS_FILE = "invalid_revocations_file"
"""a JSON revocations file must be an array of strings or an object with revoked_identities [400]"""

INVALID_SIGNAL_NAME = "invalid_signal_name"
"""signal names are 1-128 letters, digits and . _ : - starting with a letter or digit [400]"""

INVALID_SIGNAL_PAYLOAD = "invalid_signal_payload"
"""--payload is not JSON: … [400]"""

INVALID_STATUS = "invalid_status"
"""a status filter names no job status [400]"""

INVALID_TRANSITION = "invalid_transition"
"""the action is not allowed from the job's status (the lifecycle table, docs/lifecycle.md) [409]"""

CANCELLED = "cancelled"
"""the reason on a `cancelled` event: cancelled while waiting, before its first step ran, or while
a step ran (cancelled, job_cancelled_before_start, job_cancelled_during_run) [event]"""

JOB_CANCELLED_BEFORE_START = "job_cancelled_before_start"
"""the reason on a `cancelled` event: cancelled while waiting, before its first step ran, or while
a step ran (cancelled, job_cancelled_before_start, job_cancelled_during_run) [event]"""

JOB_CANCELLED_DURING_RUN = "job_cancelled_during_run"
"""the reason on a `cancelled` event: cancelled while waiting, before its first step ran, or while
a step ran (cancelled, job_cancelled_before_start, job_cancelled_during_run) [event]"""

JOB_EXISTS = "job_exists"
"""a job with id … already exists [409]"""

JOB_NOT_FOUND = "job_not_found"
"""no job with id … [404]"""

JOBS_DISABLED = "jobs_disabled"
"""new jobs are switched off on this server (GAIT_JOBS_ENABLED=false) [503]"""

MISSING_JOB_ID = "missing_job_id"
"""give a job_id or a request_id [400]"""

REASON_TOO_LONG = "reason_too_long"
"""a reason longer than 1,024 characters [400]"""

REQUIRED_ACTION_NOT_ALLOWED = "required_action_not_allowed"
"""required_action is only for decision-needed checkpoints [400]"""

SIGNAL_PAYLOAD_TOO_LARGE = "signal_payload_too_large"
"""the payload is larger than … bytes [400]"""

STOPPER_SOLE_APPROVER = "stopper_sole_approver"
"""… stopped job … and cannot be the only approver of its resume [422]"""


# --- specs and steps ------------------------------------------------------------------------------


COMMAND_NOT_ALLOWED = "command_not_allowed"
"""a command step's executable is not on the admin's allow-list (docs/security.md) [403]"""

COMMAND_SHELL_DISABLED = "command_shell_disabled"
"""`shell: true` while `GAIT_COMMAND_SHELL` is off [403]"""

COMMAND_STEPS_DISABLED = "command_steps_disabled"
"""a command step while `GAIT_COMMAND_STEPS` is off (the default) [403]"""

HTTP_DESTINATION_FORBIDDEN = "http_destination_forbidden"
"""an http step's destination (after DNS, on every redirect) is loopback, link-local, private,
multicast or metadata and not allow-listed [step]"""

SECRET_LITERAL_REFUSED = "secret_literal_refused"
"""a literal value in a header or env entry named like a credential: use `{"secret": "NAME"}` [400]"""

SECRET_MISSING = "secret_missing"
"""a referenced secret is not in the worker's store (`GAIT_SECRET_<NAME>`) [step]"""

SPEC_DUPLICATE_STEP_NAME = "spec_duplicate_step_name"
"""two steps share a name [400]"""

SPEC_DURATION_TOO_LONG = "spec_duration_too_long"
"""a duration above its bound (`details.max_seconds`, `GAIT_SPEC_DURATION_MAX`) [400]"""

SPEC_ENV_RESERVED = "spec_env_reserved"
"""a command's env names a variable the loader, the shell or gaitweb owns [400]"""

SPEC_INVALID = "spec_invalid"
"""a spec value of the wrong type or shape (`details.path` names it) [400]"""

SPEC_INVALID_DURATION = "spec_invalid_duration"
"""not a duration such as 30s, 5m or 24h [400]"""

SPEC_MISSING_FIELD = "spec_missing_field"
"""a required spec field is missing [400]"""

SPEC_TOO_LARGE = "spec_too_large"
"""the spec is larger than … bytes [400]"""

SPEC_UNKNOWN_FIELD = "spec_unknown_field"
"""a spec field that is not allowed there [400]"""

SPEC_UNKNOWN_FUNCTION = "spec_unknown_function"
"""a python step names a function not registered in code [400]"""

SPEC_UNKNOWN_WORKFLOW = "spec_unknown_workflow"
"""a workflow spec names no registered workflow (or no registered version of it) [400]"""

SPEC_UNKNOWN_KIND = "spec_unknown_kind"
"""a step kind other than python, command, http, sleep, wait_event, approval, checkpoint [400]"""

SPEC_UNPARSEABLE = "spec_unparseable"
"""… is not valid YAML or JSON: … [400]"""


# --- job templates and recurring jobs -------------------------------------------------------------


INVALID_CATCH_UP = "invalid_catch_up"
"""a template's `catch_up` is not one of its choices [400]"""

INVALID_CONTINUITY = "invalid_continuity"
"""a template's `continuity` is not one of its choices [400]"""

INVALID_CRON = "invalid_cron"
"""cron must be a string [400]"""

INVALID_OVERLAP = "invalid_overlap"
"""a template's `overlap` is not one of its choices [400]"""

INVALID_TEMPLATE_ID = "invalid_template_id"
"""template ids are 1-64 letters, digits and . _ - starting with a letter or digit [400]"""

INVALID_TIMEZONE = "invalid_timezone"
"""timezone must be an IANA name [400]"""

SPEC_OR_TEMPLATE = "spec_or_template"
"""give a spec or a template_id, not both [400]"""

SPEC_REQUIRED = "spec_required"
"""paste a spec or choose a template [400]"""

TEMPLATE_EXISTS = "template_exists"
"""a job template with id … already exists [409]"""

TEMPLATE_NOT_FOUND = "template_not_found"
"""no job template with id … [400/404]"""

TEMPLATE_NOT_OWNER = "template_not_owner"
"""template … belongs to identity …: only that identity or an admin may … it [403]"""

TEMPLATE_RUN_ACTIVE = "template_run_active"
"""template … already has an active or queued run [409]"""


# --- policies, the gate and approval requests -----------------------------------------------------


APPROVAL_ALREADY_DECIDED = "approval_already_decided"
"""… already decided approval request … [409]"""

APPROVAL_EXPIRED = "approval_expired"
"""approval request … expired at … [409]"""

APPROVAL_NOT_FOUND = "approval_not_found"
"""no approval request … [404]"""

APPROVAL_NOT_PENDING = "approval_not_pending"
"""the approval request is already approved, rejected or expired [409]"""

APPROVAL_REQUEST_PENDING = "approval_request_pending"
"""job … waits on … approval requests: …; decide each request [409]"""

DECISION_NOT_PENDING = "decision_not_pending"
"""job … no longer waits on checkpoint …: it was answered, or a newer question replaced it [409]"""

EMERGENCY_STOP_STATE_UNAVAILABLE = "emergency_stop_state_unavailable"
"""the gate cannot read the job's stop state (unknown job, or one the caller may not see): `block`
[gate]"""

IDENTITY_POLICY_NOT_FOUND = "identity_policy_not_found"
"""identity … has no policy of its own [404]"""

INTENT_INVALID = "intent_invalid"
"""intent file … is not JSON: … at line … [400]"""

INTENT_JOB_MISMATCH = "intent_job_mismatch"
"""intent context.job_id '…' is not job '…' [400]"""

INVALID_DECISION = "invalid_decision"
"""decision must be 'approve' or 'reject' [400]"""

INVALID_DISPATCH_PATH = "invalid_dispatch_path"
"""path must be a short name such as 'api' or 'cli' [400]"""

INVALID_EXPIRES_IN = "invalid_expires_in"
"""expires_in must be a positive number of seconds [400]"""

INVALID_MAY_REQUEST = "invalid_may_request"
"""may_request must be a list of stored policy names [400]"""

INVALID_ON_EXPIRY = "invalid_on_expiry"
"""on_expiry must be one of … [400]"""

INVALID_POLICY_NAME = "invalid_policy_name"
"""policy names starting with '…' are reserved for policy files [400]"""

INVALID_POLICY_REF = "invalid_policy_ref"
"""give either policy or policy_source, not both [400]"""

POLICY_ASSIGNMENT_UNAVAILABLE = "policy_assignment_unavailable"
"""GAIT_DEFAULT_POLICY names …, which is not a stored policy [503]"""

POLICY_DUPLICATE_KEY = "policy_duplicate_key"
"""a key appears twice in a policy mapping [400]"""

POLICY_EVALUATION_REQUIRED = "policy_evaluation_required"
"""job … is bound to policy …; resume must re-evaluate it [422]"""

POLICY_FILE_NOT_FOUND = "policy_file_not_found"
"""policy file not found: … [400]"""

POLICY_FILE_UNREADABLE = "policy_file_unreadable"
"""cannot read policy file …: … [400]"""

POLICY_FROM_TEMPLATE = "policy_from_template"
"""a job created from a template uses the template's policy [400]"""

POLICY_INVALID_VALUE = "policy_invalid_value"
"""policy source must be text [400]"""

POLICY_MISSING_KEY = "policy_missing_key"
"""a policy or rule lacks a required key [400]"""

POLICY_NONE_REFUSED = "policy_none_refused"
"""a job cannot ask for no policy (…); omit the field to get the policy an admin assigned [422]"""

POLICY_NOT_ALLOWED = "policy_not_allowed"
"""jobs of identity … are bound to policy … by an admin; … [422]"""

POLICY_NOT_FOUND = "policy_not_found"
"""no policy named … [400/404]"""

POLICY_TOO_LARGE = "policy_too_large"
"""a policy is at most … characters [400]"""

POLICY_UNKNOWN_KEY = "policy_unknown_key"
"""a policy key gaitweb and Gait do not know [400]"""

POLICY_UNSUPPORTED_KEY = "policy_unsupported_key"
"""a Gait policy key gaitweb does not implement [400]"""

SELF_APPROVAL_FORBIDDEN = "self_approval_forbidden"
"""… submitted or runs job … and cannot decide its approval [422]"""


# --- evidence packs and signing keys --------------------------------------------------------------


INVALID_KEY_FORMAT = "invalid_key_format"
"""unknown public key format … [400]"""

INVALID_PACK_ID = "invalid_pack_id"
"""a pack id is 64 lowercase hex digits [400]"""

JOB_PACK_INCOMPLETE = "job_pack_incomplete"
"""a job pack does not declare every file a job pack needs [verify]"""

JOB_PAYLOAD_INCONSISTENT = "job_payload_inconsistent"
"""the pack's job payload disagrees with its journal [verify]"""

JOB_PAYLOAD_INVALID = "job_payload_invalid"
"""job_payload.json or job_state.json is not the expected JSON object [verify]"""

JOURNAL_CHAIN_BROKEN = "journal_chain_broken"
"""the journal of … has … events, expected … [409]"""

KEY_OUTPUT_UNWRITABLE = "key_output_unwritable"
"""the CLI cannot write the key file it was asked to write [400]"""

MANIFEST_INVALID = "manifest_invalid"
"""the pack's manifest is not a PackSpec v1 manifest (the message says where) [400]"""

MANIFEST_MISSING = "manifest_missing"
"""the … file has no …; it is not a pack [400]"""

MISSING_FILE = "missing_file"
"""a pack upload without a file [400]"""

PACK_DOCUMENT_TOO_LARGE = "pack_document_too_large"
"""a document inside a pack is larger than its limit [400]"""

PACK_FILE_NOT_FOUND = "pack_file_not_found"
"""no such file: … [400]"""

PACK_FILE_UNREADABLE = "pack_file_unreadable"
"""cannot read …: … [400]"""

PACK_ID_MISMATCH = "pack_id_mismatch"
"""the pack id does not match the manifest's content [verify]"""

PACK_NOT_A_ZIP = "pack_not_a_zip"
"""the file is not a zip archive [400]"""

PACK_NOT_FOUND = "pack_not_found"
"""no pack with id … [404]"""

PACK_OUTPUT_UNWRITABLE = "pack_output_unwritable"
"""the CLI cannot write the pack file it was asked to write [400]"""

PACK_TYPE_UNSUPPORTED = "pack_type_unsupported"
"""gaitweb builds job packs, not … packs [400]"""

PACK_UNSIGNED = "pack_unsigned"
"""the pack carries no signature (accepted only with `--allow-unsigned` / `allow_unsigned=true`)
[verify]"""

PROOF_RECORDS_INVALID = "proof_records_invalid"
"""the pack's proof records are malformed [verify]"""

PROOF_RECORDS_MISSING = "proof_records_missing"
"""the pack does not declare its proof records [verify]"""

PUBLIC_KEY_FILE_NOT_FOUND = "public_key_file_not_found"
"""no such file: … [400]"""

PUBLIC_KEY_FILE_UNREADABLE = "public_key_file_unreadable"
"""cannot read …: … [400]"""

PUBLIC_KEY_INVALID = "public_key_invalid"
"""…: not an Ed25519 public key (PEM, base64 or hex of 32 bytes) [400]"""

SIGNATURE_INVALID = "signature_invalid"
"""a signature does not verify against the pack's content [verify]"""

SIGNATURE_UNTRUSTED = "signature_untrusted"
"""the pack is signed, but by no key this verifier trusts [verify]"""

SIGNING_KEY_ENV_UNSET = "signing_key_env_unset"
"""environment variable … is not set [400]"""

SIGNING_KEY_EXISTS = "signing_key_exists"
"""a signing key is already active [409]"""

SIGNING_KEY_INSECURE = "signing_key_insecure"
"""the private key file … is readable by others (mode …) [409]"""

SIGNING_KEY_INVALID = "signing_key_invalid"
"""…: an Ed25519 private key is 32 or 64 bytes, not … [400]"""

SIGNING_KEY_MISMATCH = "signing_key_mismatch"
"""the private key file does not match the registered key [409]"""

SIGNING_KEY_NOT_FOUND = "signing_key_not_found"
"""no active signing key [404]"""

SIGNING_KEY_RETIRED = "signing_key_retired"
"""the key in $… was retired [409]"""

SIGNING_KEY_ROTATION_CONFLICT = "signing_key_rotation_conflict"
"""another rotation won; run it again if needed [409]"""

SIGNING_KEY_UNAVAILABLE = "signing_key_unavailable"
"""the active key lives in $…, which is not set [409]"""

SIGNING_KEY_UNREGISTERED = "signing_key_unregistered"
"""the key in $… is not registered [409]"""

VERIFY_OPTIONS_CONFLICT = "verify_options_conflict"
"""require_signature and allow_unsigned contradict each other [400]"""

ZIP_ARCHIVE_TOO_LARGE = "zip_archive_too_large"
"""the archive is … bytes; the limit is … [400]"""

ZIP_COMPRESSION_RATIO = "zip_compression_ratio"
"""entry … inflates …:1; the limit is …:1 [400]"""

ZIP_DUPLICATE_ENTRY = "zip_duplicate_entry"
"""entry … appears more than once [400]"""

ZIP_ENCRYPTED_ENTRY = "zip_encrypted_entry"
"""entry … is encrypted [400]"""

ZIP_ENTRY_CORRUPT = "zip_entry_corrupt"
"""entry … is corrupt: … [400]"""

ZIP_ENTRY_SIZE_MISMATCH = "zip_entry_size_mismatch"
"""entry … inflates past its declared size of … bytes [400]"""

ZIP_ENTRY_TOO_LARGE = "zip_entry_too_large"
"""entry … declares … bytes; the limit is … [400]"""

ZIP_TOO_MANY_ENTRIES = "zip_too_many_entries"
"""the archive declares … entries; the limit is … [400]"""

ZIP_TOTAL_TOO_LARGE = "zip_total_too_large"
"""entries declare more than … bytes in total [400]"""

ZIP_UNSUPPORTED_COMPRESSION = "zip_unsupported_compression"
"""entry … uses compression method …; packs use deflate [400]"""


# --- workflows and external agents' calls ---------------------------------------------------------


WORKFLOW_NONDETERMINISTIC = "workflow_nondeterministic"
"""the workflow asked for a different call (name or kind) at a position than the one recorded
there: the job fails, naming both [step]"""

WORKFLOW_VERSION_MISMATCH = "workflow_version_mismatch"
"""the job's workflow version is no longer registered on the worker (keep the old version
registered while its jobs run) [step]"""

WORKFLOW_UNKNOWN = "workflow_unknown"
"""the job's workflow is not registered on the worker at all [step]"""

WORKFLOW_TOO_MANY_CALLS = "workflow_too_many_calls"
"""a workflow made more calls than one job may record (100,000) [step]"""

INVALID_CALL_NAME = "invalid_call_name"
"""a call name that is not 1-128 letters, digits and `. _ : -` [step]"""

CALLS_NOT_FOR_ENGINE_JOBS = "calls_not_for_engine_jobs"
"""calls are recorded through the API only for agent-driven jobs: the workers record a workflow's
or a spec's calls themselves [409]"""

JOB_NOT_ACTIVE = "job_not_active"
"""the job is not running, so no call can begin [409]"""

CALL_POSITION_GAP = "call_position_gap"
"""a new call must be at the next position (`details.next`) [409]"""

CALL_NOT_OPEN = "call_not_open"
"""a result for a call attempt that was never begun, or is already recorded [409]"""

CALL_ALREADY_RECORDED = "call_already_recorded"
"""the call already succeeded [409]"""

CALL_VALUE_TOO_LARGE = "call_value_too_large"
"""a call's args, output or error is larger than the limit (`details.max_bytes`) [400]"""

INVALID_CALL_ARGS = "invalid_call_args"
"""`args` must be a JSON object [400]"""

INVALID_CALL_ATTEMPT = "invalid_call_attempt"
"""`attempt` must be a positive integer [400]"""

INVALID_CALL_ERROR = "invalid_call_error"
"""`error` must be an object with a `type` [400]"""

INVALID_CALL_KIND = "invalid_call_kind"
"""`kind` must be `step` or `tool` [400]"""

INVALID_CALL_POSITION = "invalid_call_position"
"""`position` must be an integer from 1 to the maximum [400]"""

INVALID_CALL_STATUS = "invalid_call_status"
"""`status` must be `succeeded` or `failed` [400]"""
