/* A proxy file that reaches into the orchestrator: refused. */
#include "common/log.h"
#include "orchestrator/docker.h"
