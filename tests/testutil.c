/* Helpers shared by the C tests. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *tu_tempdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *path = malloc(strlen(base) + strlen(tag) + 32);
    assert_non_null(path);
    sprintf(path, "%s/fedc-%s-XXXXXX", base, tag);
    assert_non_null(mkdtemp(path));
    return path;
}

void tu_rmtree(const char *path)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

void tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

char *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    *n = fread(buf, 1, (size_t)size, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

const char *tu_src_dir(void)
{
    const char *s = getenv("FEDC_SRC");
    return s && *s ? s : ".";
}
