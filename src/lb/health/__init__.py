"""Health and failover: which backends may take requests, and how that changes.

Vocabulary (Envoy/HAProxy words, one meaning each):

- active check: the balancer probes `health_check.path`; thresholds turn a backend healthy or
  unhealthy (`thresholds.CheckState`, run by `checker.HealthChecker`);
- passive health / outlier detection: failed requests in a row eject a backend for a while
  (`outlier.OutlierDetector`);
- panic mode: when too few backends are usable, the pool spreads traffic over all of them
  (`lb.pool.Pool`);
- slow start: a backend that comes back ramps its weight up (`slowstart.SlowStart`).

`monitor.PoolHealth` ties them together for one pool. Retries live in `lb.proxy.retry`.
"""

from lb.health.checker import HealthChecker
from lb.health.monitor import PoolHealth
from lb.health.outlier import OutlierDetector, ejection_duration, max_ejected
from lb.health.slowstart import SlowStart, ramp_factor
from lb.health.thresholds import CheckState, check_delay

__all__ = [
    "CheckState",
    "HealthChecker",
    "OutlierDetector",
    "PoolHealth",
    "SlowStart",
    "check_delay",
    "ejection_duration",
    "max_ejected",
    "ramp_factor",
]
