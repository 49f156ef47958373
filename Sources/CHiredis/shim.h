#ifndef JOBFARM_CHIREDIS_SHIM_H
#define JOBFARM_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
