/* Version of libfedc: compile-time macros and the run-time string. */
#ifndef FEDC_VERSION_H
#define FEDC_VERSION_H

#include "fedc/config_build.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_VERSION_NUMBER (FEDC_VERSION_MAJOR * 10000 + FEDC_VERSION_MINOR * 100 + FEDC_VERSION_PATCH)

/* "fedc 0.1.0 (blas, server, mpi)": version and build features of the linked library. Static. */
const char *fedc_version_string(void);
/* The linked library's FEDC_VERSION_NUMBER, to compare against the headers' at run time. */
int fedc_version_number(void);

#ifdef __cplusplus
}
#endif
#endif
