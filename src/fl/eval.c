/*
 * Combining evaluation results over the slices of one set (fedc_eval_combine, trainer.h): the
 * central test set is evaluated in FEDC_EVAL_PARTS slices, on as many threads as a run has,
 * and the slices' results are combined in slice order, so the reported loss and accuracy do not
 * depend on the thread count.
 */
#include <math.h>

#include "fedc/trainer.h"

void fedc_eval_combine(const fedc_eval_out *parts, size_t n, fedc_eval_out *out)
{
    if (n == 1) { /* the whole set: as it is */
        *out = parts[0];
        return;
    }
    double loss = 0.0, correct = 0.0;
    uint64_t examples = 0;
    int acc_ok = 1;
    for (size_t i = 0; i < n; i++) {
        const uint64_t m = parts[i].num_examples;
        if (m == 0) continue;
        examples += m;
        loss += parts[i].loss * (double)m;
        if (isnan(parts[i].accuracy))
            acc_ok = 0;
        else /* accuracy = correct / m exactly rounded: round() gives correct back */
            correct += round(parts[i].accuracy * (double)m);
    }
    out->num_examples = examples;
    out->loss = examples ? loss / (double)examples : NAN;
    out->accuracy = examples && acc_ok ? correct / (double)examples : NAN;
}
