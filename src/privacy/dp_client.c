/*
 * The client's side of user-level DP: clip the update (and, for local DP, noise it) after
 * training and before it leaves the device. A step of the client pipeline, so that any trainer
 * gets it; the simulation transport calls it for every simulated client, a deployed client
 * calls it the same way.
 */
#include <assert.h>
#include <math.h>

#include "fedc/privacy.h"

fedc_status fedc_dp_client_apply(const fedc_dp_client_task *task, size_t n, float *update,
                                 fedc_dp_client_report *report, fedc_err *err)
{
    assert(task && (update || n == 0));
    if (report) report->unclipped = 1;
    if (!(task->clip >= 0.0) || !isfinite(task->clip))
        return fedc_err_set(err, FEDC_ERR_RANGE, "dp task: clip %g must be a finite number >= 0",
                            task->clip);
    if (!(task->noise_stddev >= 0.0) || !isfinite(task->noise_stddev))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "dp task: noise stddev %g must be a finite number >= 0",
                            task->noise_stddev);
    if (task->clip > 0.0) {
        double norm = 0.0;
        FEDC_TRY(fedc_dp_clip_l2(n, update, task->clip, &norm, err));
        if (report) report->unclipped = norm <= task->clip;
    }
    if (task->noise_stddev > 0.0) {
        fedc_dp_noise noise;
        if (task->seeded_noise) {
            fedc_dp_noise_init_seeded(&noise, task->seed, task->round, task->client);
        } else {
            fedc_status st = fedc_dp_noise_init_secure(&noise, err);
            if (st != FEDC_OK) return st;
        }
        fedc_status st = fedc_dp_noise_add(&noise, n, update, task->noise_stddev, err);
        fedc_dp_noise_fini(&noise);
        FEDC_TRY(st);
    }
    return FEDC_OK;
}
