/* event.c - CloudEvents 1.0 structured JSON envelope. */
#include "common/event.h"

#include <string.h>

#include "common/clock.h"

/* CloudEvents 1.0 section 3.1.1: attribute names are lowercase letters and digits, <= 20. */
static int ext_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 20)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

cm_err cm_event_build(const char *id, const char *type, const char *source, const char *subject,
                      const char *tenant, int64_t time_ms, cJSON *data, char **out)
{
    return cm_event_build_ext(id, type, source, subject, tenant, time_ms, data, NULL, out);
}

cm_err cm_event_build_ext(const char *id, const char *type, const char *source,
                          const char *subject, const char *tenant, int64_t time_ms, cJSON *data,
                          cJSON *ext, char **out)
{
    char ts[CM_RFC3339_LEN];
    cJSON *e, *x;
    char *s;

    if (ext != NULL) {
        int ok = cJSON_IsObject(ext);
        cJSON_ArrayForEach(x, ext)
        {
            /* A valid name, and the first of its name (a repeated one is refused). */
            if (!ext_name_valid(x->string) || cJSON_GetObjectItemCaseSensitive(ext, x->string) != x)
                ok = 0;
        }
        if (!ok) {
            cJSON_Delete(data);
            cJSON_Delete(ext);
            return CM_EINVAL;
        }
    }
    e = cJSON_CreateObject();
    if (e == NULL) {
        cJSON_Delete(data);
        cJSON_Delete(ext);
        return CM_ENOMEM;
    }
    cm_clock_rfc3339(time_ms, ts);
    cJSON_AddStringToObject(e, "specversion", "1.0");
    cJSON_AddStringToObject(e, "id", id);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "source", source);
    cJSON_AddStringToObject(e, "time", ts);
    if (subject)
        cJSON_AddStringToObject(e, "subject", subject);
    cJSON_AddStringToObject(e, "datacontenttype", "application/json");
    cJSON_AddStringToObject(e, "tenant", tenant);
    while (ext != NULL && ext->child != NULL) {
        x = cJSON_DetachItemViaPointer(ext, ext->child);
        if (cJSON_GetObjectItemCaseSensitive(e, x->string) != NULL) {
            cJSON_Delete(x); /* never overrides a context attribute */
            continue;
        }
        cJSON_AddItemToObject(e, x->string, x);
    }
    cJSON_Delete(ext);
    cJSON_AddItemToObject(e, "data", data);
    s = cJSON_PrintUnformatted(e);
    cJSON_Delete(e);
    if (s == NULL)
        return CM_ENOMEM;
    *out = s;
    return CM_OK;
}
