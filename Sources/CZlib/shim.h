#ifndef JOBFARM_CZLIB_SHIM_H
#define JOBFARM_CZLIB_SHIM_H
#include <zlib.h>
#endif
