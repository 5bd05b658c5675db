/* Version of the linked library and its build features. */
#include "fedc/version.h"

const char *fedc_version_string(void)
{
    return "fedc " FEDC_VERSION " ("
#if FEDC_WITH_BLAS
           "openblas"
#else
           "naive-gemm"
#endif
#if FEDC_CLIENT_ONLY
           ", client-only"
#else
           ", server"
#endif
#if FEDC_HAVE_MPI
           ", mpi"
#endif
           ")";
}

int fedc_version_number(void)
{
    return FEDC_VERSION_NUMBER;
}
