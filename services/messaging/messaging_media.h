/* messaging_media.h - the attachment check against the media service (issue 8): a message may
 * reference a media object only when it exists in the same tenant, was uploaded by the sender
 * and is processed. */
#ifndef MESSAGING_MEDIA_H
#define MESSAGING_MEDIA_H

#include <stddef.h>

#include "common/error.h"

/* Asks the media service at `media_url` ("http://127.0.0.1:8084", no trailing slash needed)
 * whether `media_id` may be attached by `user` of `tenant`:
 *   GET {media_url}/internal/v1/media/{id}/attachable?tenant=&user=
 * Returns CM_OK when it may; CM_ENOTFOUND when it does not exist for that tenant (unknown,
 * deleted or another tenant's: answer the client 404 or 400 without saying which);
 * CM_ECONFLICT when it exists but another user uploaded it or it is not processed yet (the
 * media service's reason is copied into `why`, size `n`); CM_EINVAL for an id or user that
 * cannot be a media id or user id (nothing is sent); CM_EIO or CM_ETIMEOUT when the media
 * service cannot answer within `timeout_ms`, CM_ENOMEM. Thread-safe; sends the shared key of
 * the /internal routes (common/internal.h). */
cm_err messaging_media_attachable(const char *media_url, const char *tenant, const char *user,
                                  const char *media_id, long timeout_ms, char *why, size_t n);

/* Builds the check URL into `out` (size n), percent-encoding the query values. Returns 0, or
 * -1 when an argument is unusable or it does not fit. */
int messaging_media_check_url(const char *media_url, const char *tenant, const char *user,
                              const char *media_id, char *out, size_t n);

/* Maps the media service's HTTP status of the check to the outcome above. */
cm_err messaging_media_status_err(long status);

#endif
