/* tenant.h - a tenant's settings as the other services see them.
 *
 * The user service owns them (PATCH /v1/tenants/{id}, the TenantSettings object of
 * proto/openapi.yaml) and serves them to the services at GET /internal/v1/tenants/{id}/settings
 * (not routed by the gateway). This client caches each tenant's copy for `ttl_ms`, so a change
 * applies in every process within that time. A stale copy is refreshed by one caller while the
 * others go on with it. When the user service does not answer (within `timeout_ms`), the last
 * copy is used (however old); without one, the caller's defaults apply and the call says so
 * (CM_EIO). Either way the service is not asked again for that tenant for 1 s (RETRY_MS in
 * tenant.c), so an outage or a hung user service costs one fetch a second per tenant and process,
 * not a wait of `timeout_ms` in every request, and one log line each time. Thread-safe. */
#ifndef COMMON_TENANT_H
#define COMMON_TENANT_H

#include <cJSON.h>

#include "common/error.h"

typedef struct cm_tenant_settings cm_tenant_settings;

/* `user_url`: the user service's base URL (copied). `ttl_ms` >= 0 (0: ask at every call that no
 * refresh in flight answers); `timeout_ms`: the budget of one fetch. */
cm_err cm_tenant_settings_create(const char *user_url, long ttl_ms, long timeout_ms,
                                 cm_tenant_settings **out);
void cm_tenant_settings_destroy(cm_tenant_settings *ts); /* accepts NULL */

/* The settings object of `tenant` as a new cJSON object (caller deletes). CM_ENOTFOUND: the user
 * service does not know the tenant; CM_EIO: no answer and no cached copy; CM_EINVAL: a tenant
 * id that is not 1..64 of A-Z a-z 0-9 - _. On any error `*out` is NULL. */
cm_err cm_tenant_settings_get(cm_tenant_settings *ts, const char *tenant, cJSON **out);

/* Integer setting `name` of `tenant`, read in the cached copy without copying it (for hot
 * paths); fetched as cm_tenant_settings_get does when stale. `def` when the tenant, the setting
 * or every answer is missing. */
long cm_tenant_settings_long(cm_tenant_settings *ts, const char *tenant, const char *name,
                             long def);

/* Integer setting `name` from a settings object, or `def` when absent or not a number. */
long cm_tenant_setting_long(const cJSON *settings, const char *name, long def);

#endif
