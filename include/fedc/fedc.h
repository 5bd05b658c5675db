/*
 * libfedc: federated learning in C. This header includes the whole public API.
 */
#ifndef FEDC_H
#define FEDC_H

#include "fedc/version.h"
#include "fedc/status.h"
#include "fedc/log.h"
#include "fedc/alloc.h"
#include "fedc/rng.h"
#include "fedc/vec.h"
#include "fedc/config.h"

#endif
