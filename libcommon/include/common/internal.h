/* internal.h - the shared key of the service-to-service routes (/internal/...).
 *
 * The services' /internal routes (tenant settings and CORS allowlists from the user service,
 * a tenant's conversation logs and attachment checks from messaging, media's attachable check,
 * the housekeeping runs) are never routed by the gateway, but a pod that can reach a service's
 * port could otherwise read any tenant's data through them. Every process therefore shares one
 * secret: callers send it in the X-Internal-Key header, and cm_http answers 401 on a route
 * registered under /internal/ when the header is missing or wrong.
 *
 * The keys are read once from the file named by INTERNAL_KEY_FILE: one per line (at most 4,
 * each at least 16 visible ASCII characters, surrounding blanks dropped, 4 KiB in all). The
 * first is sent, every one is accepted, so a key is rotated without a failed call: add the
 * new one as a second line everywhere, then make it the first, then drop the old one, rolling
 * every process after each step. Deployments set it (docker-compose generates the
 * file, the k8s base mounts the Secret chat-internal-key, `make run` keeps one in .local/keys;
 * deploy/check_deploy.py fails a manifest that does not). Unset, the routes are open as before
 * and the process logs a warning: for a service run by hand on a developer's machine. */
#ifndef COMMON_INTERNAL_H
#define COMMON_INTERNAL_H

#include "common/error.h"

/* The request header that carries the key. */
#define CM_INTERNAL_KEY_HEADER "X-Internal-Key"

/* Loads the keys from INTERNAL_KEY_FILE, once per process (later calls return the first
 * result). CM_OK when loaded or when the variable is unset (warned); CM_EIO when the file is
 * unreadable, CM_EINVAL when it holds no key, more than 4 or one shorter than 16 visible
 * characters, CM_ETOOBIG over 4 KiB, CM_ENOMEM (all logged): the process should refuse to
 * start, and the routes accept no caller. Thread-safe. cm_http_config_from_env calls it,
 * so every process with an HTTP server has loaded it before serving. */
cm_err cm_internal_key_load(void);

/* The whole request header line "X-Internal-Key: <first key>" for cm_httpc_get_with and
 * curl_slist_append, or NULL when no key is configured (send no header then). Owned by the
 * library, valid for the life of the process. */
const char *cm_internal_key_header(void);

/* 1 when `presented` (the header's value, NULL when absent) opens an /internal route: it
 * equals one of the keys (compared in constant time), or no key is configured. 0 otherwise. */
int cm_internal_key_accepts(const char *presented);

#endif
