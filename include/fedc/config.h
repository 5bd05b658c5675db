/*
 * Configuration: a registry of typed keys (section.key) with defaults, bounds and help, read
 * from INI files and from "section.key=value" assignments (the command line's --set).
 *
 * Unknown sections or keys, values of the wrong type and values out of bounds are errors that
 * name the file, the line and the key. `fedc help config` prints the registry.
 * The registry itself is one table (src/core/config_keys.c): every module's keys are there.
 */
#ifndef FEDC_CONFIG_H
#define FEDC_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fedc_config_type {
    FEDC_CFG_INT = 0,
    FEDC_CFG_DOUBLE = 1,
    FEDC_CFG_BOOL = 2,   /* true/false, yes/no, on/off, 1/0 */
    FEDC_CFG_STRING = 3,
    FEDC_CFG_CHOICE = 4  /* one of the '|'-separated words in `choices` */
} fedc_config_type;

enum {
    FEDC_CFG_MIN_EXCL = 1u << 0, /* value must be > min (not >=) */
    FEDC_CFG_MAX_EXCL = 1u << 1, /* value must be < max (not <=) */
    FEDC_CFG_BOUNDED = 1u << 2   /* min/max apply (INT and DOUBLE) */
};

typedef struct fedc_config_key {
    const char *section;
    const char *name;
    fedc_config_type type;
    const char *def;     /* default, as it would be written in a file */
    double min, max;     /* with FEDC_CFG_BOUNDED */
    unsigned flags;
    const char *choices; /* FEDC_CFG_CHOICE: "a|b|c" */
    const char *help;
} fedc_config_key;

/* The registry: every key libfedc knows, in display order. */
size_t fedc_config_key_count(void);
const fedc_config_key *fedc_config_key_at(size_t i);
/* The key "section.key", or NULL. */
const fedc_config_key *fedc_config_key_find(const char *dotted);

/* A set of values, one per registry key, starting at the defaults. Heap handle. */
typedef struct fedc_config fedc_config;

fedc_config *fedc_config_create(void); /* NULL on out-of-memory */
void fedc_config_destroy(fedc_config *cfg); /* NULL allowed */
fedc_config *fedc_config_dup(const fedc_config *cfg);

/* Reads an INI file over the current values. On error nothing is kept from that file, and
 * cfg's message names "path:line: [section] key: what is wrong". Errors: FEDC_ERR_IO,
 * FEDC_ERR_CONFIG. */
fedc_status fedc_config_load_file(fedc_config *cfg, const char *path);
/* Applies "section.key=value". `origin` names where it came from in messages ("--set"). */
fedc_status fedc_config_set(fedc_config *cfg, const char *assignment, const char *origin);
/* Sets one key from text. Errors: FEDC_ERR_CONFIG (unknown key, bad type, out of bounds). */
fedc_status fedc_config_set_value(fedc_config *cfg, const char *section, const char *key,
                                  const char *value, const char *origin);
/* The last error's message on cfg. Valid until the next call on cfg. */
const char *fedc_config_errmsg(const fedc_config *cfg);

/* Typed reads of "section.key". Asking for an unknown key or the wrong type is a programming
 * error (assertion). Strings live as long as cfg or until the key is set again. */
int64_t fedc_config_int(const fedc_config *cfg, const char *dotted);
double fedc_config_double(const fedc_config *cfg, const char *dotted);
int fedc_config_bool(const fedc_config *cfg, const char *dotted);
const char *fedc_config_str(const fedc_config *cfg, const char *dotted); /* STRING and CHOICE */
/* Where the value came from: "default", "path:line" or the origin given to fedc_config_set. */
const char *fedc_config_origin(const fedc_config *cfg, const char *dotted);
/* 1 when the key was set explicitly (file or assignment), 0 when it holds its default. */
int fedc_config_is_set(const fedc_config *cfg, const char *dotted);

/* Writes every value as an INI file (only sections with keys; defaults included). */
fedc_status fedc_config_write(const fedc_config *cfg, FILE *out);
/* Prints the registry: section, key, type, default, bounds, help. */
void fedc_config_print_help(FILE *out);

#ifdef __cplusplus
}
#endif
#endif
