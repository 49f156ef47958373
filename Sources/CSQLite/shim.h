#ifndef JOBFARM_CSQLITE_SHIM_H
#define JOBFARM_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
