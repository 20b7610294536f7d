/* allowed */
#include "admin/listener.h"
#include "common/buf.h"
