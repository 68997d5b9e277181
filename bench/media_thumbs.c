/* media_thumbs.c - benchmark of the media worker's image step (media_image_render: the
 * stripped original and the 128/512/1024 thumbnails) over the files given, one core.
 * Prints one line: "media_render images=N seconds=S images_per_s=R thumbs_per_s=T". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "media.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        if (f)
            fclose(f);
        return NULL;
    }
    buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    struct timespec t0, t1;
    int done = 0;
    double secs;

    cm_log_init("bench", CM_LOG_WARN);
    if (argc < 2 || media_image_init() != CM_OK) {
        fprintf(stderr, "usage: %s IMAGE...\n", argv[0]);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; i < argc; i++) {
        size_t len;
        char *data = slurp(argv[i], &len), type[MEDIA_TYPE_MAX], why[256];
        media_image_variant v[4];
        if (data == NULL || media_magic_type(data, len, type) != CM_OK ||
            media_image_render(data, len, type, v, why, sizeof(why)) != CM_OK) {
            fprintf(stderr, "%s: %s\n", argv[i], data ? why : "unreadable");
            free(data);
            return 1;
        }
        media_image_variant_free(v, 4);
        free(data);
        done++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("media_render images=%d seconds=%.3f images_per_s=%.2f thumbs_per_s=%.2f\n", done,
           secs, done / secs, 3 * done / secs);
    media_image_shutdown();
    return 0;
}
