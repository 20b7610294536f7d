"""wakegate end-to-end test harness: real redis-server, dockerd, nginx and the
wakegate binary, started in a private temporary directory and stopped by pid.
See test/e2e/README.md."""

from . import http1, rawhttp, upstream  # noqa: F401
from .dockerd import Dockerd, DockerApiError, http_get_container  # noqa: F401
from .image import HEALTHCHECK_EXTRA, TEST_IMAGE, TEST_IMAGE_HEALTHY, build_image  # noqa: F401
from .nginx import NginxUpstream  # noqa: F401
from .procs import REGISTRY  # noqa: F401
from .redis_server import RedisServer  # noqa: F401
from .upstream import RecordingUpstream  # noqa: F401
from .util import HarnessError, free_port, free_ports, tcp_connectable, wait_until  # noqa: F401
from .wakegate import Wakegate, WakegateFactory, wakegate_bin  # noqa: F401
