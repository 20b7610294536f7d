/* common/ may include only common/. */
#include "proxy/conn.h"
