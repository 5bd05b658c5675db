/*
 * Fuzz target: the Authorization header parser (src/net/sign.c), which reads bytes straight
 * from the network. Properties: no crash or leak on any input; whatever parses formats back to
 * a header that parses to the same values; verifying a parsed header never crashes.
 * libFuzzer entry point (tests/fuzz/README.md); the plain driver and net_fuzz_test replay the
 * seed corpus in `make check`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/sign.h"

#ifndef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size);
int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size)
{
    fedci_auth a, b;
    if (fedci_auth_parse((const char *)data, size, &a, NULL) != FEDC_OK) return 0;
    char txt[FEDCI_AUTH_MAX];
    fedci_auth_format(&a, txt, sizeof txt);
    if (fedci_auth_parse(txt, strlen(txt), &b, NULL) != FEDC_OK || memcmp(&a, &b, sizeof a) != 0)
        abort(); /* format and parse disagree */
    (void)fedci_auth_verify(&a, "POST", "/v1/checkin");
    (void)fedci_auth_verify_any(&a, "POST", "/v1/checkin"); /* in its mode: body= or mac= */
    return 0;
}
