/* allowed */
#include "orchestrator/orch.h"
