"""The layer below the API and the worker: what both need, torch-free and FastAPI-free.

``settings`` (every ``PRUNESCOPE_*`` setting), ``dispatch`` (how a job's shards reach a runner: the
dispatcher protocol, the Celery configuration and task name, re-dispatch of orphans), ``specs`` (the job
specs the API validates, the client and CLI build and the runners read) and ``limits`` (the request's
bounds, seen by the specs' validators). With ``api.store`` (the schema) it is all the worker imports
of ``api``; the web app (``api.app``, ``api.routes``) is never imported by the worker, and the API never
imports ``worker``: the command that starts it chooses the executor.
"""
