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
#include "fedc/nn.h"
#include "fedc/optim.h"
#include "fedc/data.h"
#include "fedc/accum.h"
#include "fedc/strategy.h"
#include "fedc/trainer.h"
#include "fedc/trainer_nn.h"
#include "fedc/engine.h"
#include "fedc/sim.h"
#include "fedc/mpi.h"
#include "fedc/run.h"
#include "fedc/net.h"
#include "fedc/client.h"
#if !FEDC_CLIENT_ONLY
#include "fedc/server.h"
#include "fedc/store.h"
#endif
#include "fedc/privacy.h"
#include "fedc/safetensors.h"
#include "fedc/codec.h"
#include "fedc/secagg.h"

#endif
