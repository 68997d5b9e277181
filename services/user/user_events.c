/* user_events.c - the users topic: CloudEvents about users and sessions, keyed by user id. */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/event.h"
#include "common/log.h"
#include "common/uuid.h"
#include "user.h"

void user_publish(user_ctx *ctx, const char *type, const char *tenant, const char *user_id,
                  cJSON *data)
{
    char id[CM_UUID_STRLEN], *ev = NULL;
    cm_kafka_header h[] = {{"x-request-id", cm_log_request_id()}};

    if (cm_uuid_v7(id) != CM_OK ||
        cm_event_build(id, type, "/user", user_id, tenant, cm_clock_now_ms(), data, &ev) !=
            CM_OK) {
        cm_warn("%s for %s/%s not built", type, tenant, user_id);
        return;
    }
    /* Best effort: user events are not behind an outbox yet (see the service README). */
    if (cm_kafka_produce(ctx->kafka, "users", user_id, strlen(user_id), ev, strlen(ev), h, 1,
                         NULL) != CM_OK)
        cm_warn("%s for %s/%s not published", type, tenant, user_id);
    free(ev);
}
