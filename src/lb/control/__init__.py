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
- worker table, wake-ups: each worker's row, heartbeat and datagram socket in the control
  directory, through which one worker has the others apply a change or flush their metrics and
  waits for their acks; the shared sequence number a request checks (`workers.py`);
- applied: how many workers (and instances) acknowledged a change before its answer;
- bus: Redis pub/sub carrying overrides, added backends and purges to other instances, and their
  acks (`bus.py`);
- config watch: `server.watch_config` (`watch.py`); host: what `Control` works on (`host.py`);
- `Control` (`app.control`): all of the above for one app (`runtime.py`); `api.py` puts it under
  the admin prefix, `supervisor.py` makes SIGHUP to `lb serve --workers N` reload every worker.
"""
