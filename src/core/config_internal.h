/* Internal to the config module: shared between config.c and config_keys.c. */
#ifndef FEDC_CORE_CONFIG_INTERNAL_H
#define FEDC_CORE_CONFIG_INTERNAL_H

#include "fedc/config.h"

#endif
