"""The durable execution engine (docs/engine.md).

``advance(job_id)`` — run as a django-q2 task (jobs/tasks.py) — is the only entry point that
executes steps. It is safe to deliver any number of times:

1. **Claim.** With the job row locked: take a lease (``lease_token``, ``lease_owner``,
   ``lease_expires_at``) only if the job is queued, waiting and due, or running with no lease or
   an expired one. Anything else (a lease held by a live worker, a paused or stopped job, a
   duplicate delivery) exits without writing. The claim journals ``started`` (from queued or
   waiting) or ``recovered`` (an expired lease: the previous worker died).
2. **Loop** while the lease is held: control state (paused → park; stopped / cancelled →
   ``dispatch_blocked``), deadline, time slice, the gate, then the step at ``cursor``.
3. **Checkpoint** each success in ONE statement guarded by the lease token and the revision
   (PostgreSQL: a data-modifying CTE that updates the job, inserts the StepRun and the event and
   returns the job's status: one round trip, one commit).
4. **Park** (sleep, wait_event, approval, retry backoff, pause) by releasing the lease; timers
   are delayed broker rows (jobs/enqueue.py), not a held worker.

A heartbeat thread (one per worker process) renews the lease every ``HEARTBEAT_SECONDS`` and,
while a step runs, polls the job's status every ``STOP_POLL_SECONDS``: a stop or cancel sets the
step context's ``stopped`` flag and kills a command's process group.

A non-idempotent step's ``started`` StepRun is committed before it runs. If its worker dies,
the next claim finds that row, marks it ``in_doubt`` and moves the job to ``decision_needed``
with a decision-needed checkpoint; approving and resuming runs the step again. Idempotent steps
are simply retried.

``sweep()`` re-enqueues jobs whose lease expired or whose wake-up is due or lost. It re-enqueues
itself through the delayed broker every ``SWEEP_SECONDS``; a django-q2 Schedule
(``engine_bootstrap``) restarts the chain if it dies, and a token in the cache keeps one chain.

Where each part lives:

- ``runner``: ``advance()``, the runner's loop, its locked transitions and the checkpoint of a
  succeeded step;
- ``backend``, ``pg``, ``orm``: claim and checkpoint write, one interface (``ClaimWrite``), a
  PostgreSQL implementation and an ORM one, chosen by the connection's vendor;
- ``in_doubt``: what a claim does with an attempt a dead worker left ``started``;
- ``attempts``: one attempt of a step that runs here; ``retries``: what a failure leads to;
- ``parking``: sleep, wait_event and approval; ``gate``: the policy gate before a step;
- ``heartbeat``: the lease renewal and stop watch; ``lease``: the lease itself;
- ``sweep``: the chain that re-enqueues what was missed.

Signals and counters are services and selectors like any other (jobs.services.job_signal,
jobs.stats.job_stats); the enqueue path is jobs/enqueue.py.
"""
