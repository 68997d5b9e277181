/* messaging_media.c - the messaging service's client of the media service's attachment check
 * (GET /internal/v1/media/{id}/attachable), over libcommon's HTTP client with the shared
 * internal key. */
#include "messaging_media.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/httpc.h"
#include "common/internal.h"

#define BODY_MAX 16384

static int append_escaped(const char *s, char *out, size_t n, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (*len + (plain ? 1 : 3) >= n)
            return -1;
        if (plain) {
            out[(*len)++] = (char)*p;
        } else {
            out[(*len)++] = '%';
            out[(*len)++] = hex[*p >> 4];
            out[(*len)++] = hex[*p & 15];
        }
    }
    out[*len] = '\0';
    return 0;
}

/* Media ids are UUIDs: 36 characters of hex digits and dashes. */
static int media_id_ok(const char *id)
{
    size_t i = 0;
    for (; id[i]; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') || id[i] == '-'))
            return 0;
    return i == 36;
}

int messaging_media_check_url(const char *media_url, const char *tenant, const char *user,
                              const char *media_id, char *out, size_t n)
{
    size_t len, base;
    int w;

    if (media_url == NULL || tenant == NULL || user == NULL || media_id == NULL || !*tenant ||
        !*user || !media_id_ok(media_id))
        return -1;
    base = strlen(media_url);
    while (base > 0 && media_url[base - 1] == '/')
        base--;
    w = snprintf(out, n, "%.*s/internal/v1/media/%s/attachable?tenant=", (int)base, media_url,
                 media_id);
    if (w < 0 || (size_t)w >= n)
        return -1;
    len = (size_t)w;
    if (append_escaped(tenant, out, n, &len) != 0 || len + 7 >= n)
        return -1;
    memcpy(out + len, "&user=", 7);
    len += 6;
    return append_escaped(user, out, n, &len);
}

cm_err messaging_media_status_err(long status)
{
    switch (status) {
    case 200:
        return CM_OK;
    case 404:
        return CM_ENOTFOUND;
    case 409:
        return CM_ECONFLICT;
    case 400:
        return CM_EINVAL;
    default:
        return CM_EIO;
    }
}

cm_err messaging_media_attachable(const char *media_url, const char *tenant, const char *user,
                                  const char *media_id, long timeout_ms, char *why, size_t n)
{
    char url[1024];
    char *body = NULL;
    size_t len = 0;
    long status = 0;
    cm_err rc;

    if (n)
        why[0] = '\0';
    if (messaging_media_check_url(media_url, tenant, user, media_id, url, sizeof(url)) != 0)
        return CM_EINVAL;
    rc = cm_httpc_get_with(url, cm_internal_key_header(), timeout_ms, BODY_MAX, &body, &len,
                           &status);
    if (rc != CM_OK)
        return rc == CM_ETIMEOUT || rc == CM_ENOMEM ? rc : CM_EIO;
    rc = messaging_media_status_err(status);
    if (rc != CM_OK && n) {
        cJSON *p = cJSON_ParseWithLength(body, len);
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(p, "detail");
        if (cJSON_IsString(d))
            snprintf(why, n, "%s", d->valuestring);
        cJSON_Delete(p);
    }
    free(body);
    return rc;
}
