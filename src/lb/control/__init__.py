"""Runtime control: admin changes to backends, hot reload, and sharing both between processes.

Vocabulary:
- override: an admin change to one backend (state draining/disabled/active, weight), laid over
  the config and kept across reloads (`overrides.py`);
- added backend: one the admin API added (POST) or removed (DELETE) at run time, origin `api`,
  kept across reloads and shared as state like an override (`members.py`);
- reload: a new config, validated completely, made live as a new generation in one swap
  (`reload.py`);
- control file: the document through which the workers of one instance share overrides and
  events (reload, cache purge) (`shared.py`);
- bus: Redis pub/sub carrying overrides, added backends and purges to other instances (`bus.py`);
- `Control` (`app.control`): all of the above for one app (`runtime.py`); `api.py` puts it under
  the admin prefix, `supervisor.py` makes SIGHUP to `lb serve --workers N` reload every worker.
"""
