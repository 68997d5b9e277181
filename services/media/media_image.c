/* media_image.c - type detection with libmagic and image work with libvips: the header-only
 * dimension check, and the stripped variants (re-encoded original and thumbnails).
 * Untrusted input rules: libvips runs with its untrusted loaders blocked
 * (vips_block_untrusted_set), the loader it picks must agree with the type libmagic read from
 * the bytes, and the pixel cap is checked from the header before anything is decoded. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <magic.h>
#include <vips/vips.h>

#include "common/log.h"
#include "media.h"

static magic_t magic;
static pthread_mutex_t magic_lock = PTHREAD_MUTEX_INITIALIZER; /* libmagic is not thread-safe */

cm_err media_image_init(void)
{
    if (VIPS_INIT("media")) {
        cm_error("libvips: %s", vips_error_buffer());
        return CM_EINTERNAL;
    }
    vips_block_untrusted_set(TRUE);
    /* Every image is seen once: caching operations would only hold memory. */
    vips_cache_set_max(0);
    if (getenv("VIPS_CONCURRENCY") == NULL)
        vips_concurrency_set(1); /* one core per pipeline; several workers scale out */
    magic = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
    if (magic == NULL || magic_load(magic, NULL) != 0) {
        cm_error("libmagic: cannot load its database: %s",
                 magic ? magic_error(magic) : "magic_open failed");
        return CM_EINTERNAL;
    }
    return CM_OK;
}

void media_image_shutdown(void)
{
    if (magic)
        magic_close(magic);
    magic = NULL;
    vips_shutdown();
}

cm_err media_magic_type(const void *data, size_t len, char out[MEDIA_TYPE_MAX])
{
    const char *t;
    cm_err rc = CM_OK;

    /* libmagic decides from the first bytes; 64 KiB covers every rule it ships. */
    if (len > 65536)
        len = 65536;
    pthread_mutex_lock(&magic_lock);
    t = magic_buffer(magic, data, len);
    if (t == NULL || snprintf(out, MEDIA_TYPE_MAX, "%s", t) >= MEDIA_TYPE_MAX)
        rc = CM_EINTERNAL;
    pthread_mutex_unlock(&magic_lock);
    return rc;
}

/* The libvips loader class names (vips_foreign_find_load_buffer) each image type must get. */
static int loader_agrees(const char *loader, const char *type)
{
    const char *want = strcmp(type, "image/jpeg") == 0  ? "Jpeg"
                       : strcmp(type, "image/png") == 0 ? "Png"
                       : strcmp(type, "image/gif") == 0 ? "Gif"
                       : strcmp(type, "image/webp") == 0 ? "Webp"
                                                         : NULL;
    return want && loader && strstr(loader, want) != NULL;
}

cm_err media_image_probe(const void *data, size_t len, const char *type, int64_t pixel_max,
                         int *width, int *height, char *why, size_t n)
{
    const char *loader = vips_foreign_find_load_buffer(data, len);
    VipsImage *img;

    if (!loader_agrees(loader, type)) {
        vips_error_clear();
        snprintf(why, n, "the bytes are not a %s image libvips accepts", type);
        return CM_EINVAL;
    }
    /* Opening reads the header only; pixels are decoded on demand, never here. */
    img = vips_image_new_from_buffer(data, len, "", "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (img == NULL) {
        snprintf(why, n, "the image header cannot be read");
        vips_error_clear();
        return CM_EINVAL;
    }
    *width = vips_image_get_width(img);
    *height = vips_image_get_height(img);
    g_object_unref(img);
    if ((int64_t)*width * (int64_t)*height > pixel_max) {
        snprintf(why, n, "the image is %dx%d pixels, more than the limit of %lld pixels",
                 *width, *height, (long long)pixel_max);
        return CM_ETOOBIG;
    }
    return CM_OK;
}

/* The save format (suffix with options) for each type: strip drops EXIF (with GPS), XMP,
 * IPTC and comments. */
static const char *save_suffix(const char *type)
{
    if (strcmp(type, "image/png") == 0)
        return ".png[strip]";
    if (strcmp(type, "image/gif") == 0)
        return ".gif[strip]";
    if (strcmp(type, "image/webp") == 0)
        return ".webp[Q=90,strip]";
    return ".jpg[Q=90,strip]";
}

static cm_err save(VipsImage *img, const char *type, const char *name, media_image_variant *v,
                   char *why, size_t n)
{
    snprintf(v->name, sizeof(v->name), "%s", name);
    snprintf(v->type, sizeof(v->type), "%s", type);
    v->width = vips_image_get_width(img);
    v->height = vips_image_get_height(img);
    if (vips_image_write_to_buffer(img, save_suffix(type), &v->data, &v->len, NULL) != 0) {
        snprintf(why, n, "encoding %s failed: %.200s", name, vips_error_buffer());
        vips_error_clear();
        return CM_EINVAL;
    }
    return CM_OK;
}

cm_err media_image_render(const void *data, size_t len, const char *type,
                          media_image_variant out[4], char *why, size_t n)
{
    VipsImage *img = NULL, *rot = NULL;
    cm_err rc = CM_EINVAL;
    int i;

    memset(out, 0, 4 * sizeof(*out));
    img = vips_image_new_from_buffer(data, len, "", "access", VIPS_ACCESS_RANDOM, NULL);
    if (img == NULL || vips_autorot(img, &rot, NULL) != 0) {
        snprintf(why, n, "the image cannot be decoded: %.200s", vips_error_buffer());
        vips_error_clear();
        goto out;
    }
    if (save(rot, type, "original", &out[0], why, n) != CM_OK)
        goto out;
    for (i = 0; i < 3; i++) {
        VipsImage *t = NULL;
        char name[16];
        int box = media_thumb_boxes[i];
        snprintf(name, sizeof(name), "thumb_%d", box);
        /* vips_thumbnail shrinks on load where the format allows and applies the EXIF
         * orientation; "down" never enlarges a small image. */
        if (vips_thumbnail_buffer((void *)data, len, &t, box, "height", box, "size",
                                  VIPS_SIZE_DOWN, NULL) != 0) {
            snprintf(why, n, "the %s thumbnail failed: %.200s", name, vips_error_buffer());
            vips_error_clear();
            goto out;
        }
        rc = save(t, type, name, &out[i + 1], why, n);
        g_object_unref(t);
        if (rc != CM_OK)
            goto out;
    }
    rc = CM_OK;
out:
    if (rot)
        g_object_unref(rot);
    if (img)
        g_object_unref(img);
    if (rc != CM_OK)
        media_image_variant_free(out, 4);
    return rc;
}

void media_image_variant_free(media_image_variant *v, int count)
{
    for (int i = 0; i < count; i++) {
        g_free(v[i].data);
        v[i].data = NULL;
        v[i].len = 0;
    }
}
