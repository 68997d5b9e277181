/* event.c - CloudEvents 1.0 structured JSON envelope. */
#include "common/event.h"

#include "common/clock.h"

cm_err cm_event_build(const char *id, const char *type, const char *source, const char *subject,
                      const char *tenant, int64_t time_ms, cJSON *data, char **out)
{
    char ts[CM_RFC3339_LEN];
    cJSON *e = cJSON_CreateObject();
    char *s;

    if (e == NULL) {
        cJSON_Delete(data);
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
    cJSON_AddItemToObject(e, "data", data);
    s = cJSON_PrintUnformatted(e);
    cJSON_Delete(e);
    if (s == NULL)
        return CM_ENOMEM;
    *out = s;
    return CM_OK;
}
