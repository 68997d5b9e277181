/* event.h - the CloudEvents 1.0 JSON envelope (structured mode) every Kafka event uses:
 * specversion, id, type, source, time, subject, datacontenttype, tenant, data.
 * Schemas: proto/events/<type>.schema.json. */
#ifndef COMMON_EVENT_H
#define COMMON_EVENT_H

#include <stdint.h>

#include <cJSON.h>

#include "common/error.h"

/* Builds the envelope into a heap string `*out` (caller frees with free()). `id` identifies
 * the event for deduplication and must be the same when the same event is published again;
 * `time_ms` is when it happened; `data` is taken over (freed here, also on failure).
 * CM_ENOMEM on failure. */
cm_err cm_event_build(const char *id, const char *type, const char *source, const char *subject,
                      const char *tenant, int64_t time_ms, cJSON *data, char **out);

/* Like cm_event_build, with CloudEvents extension attributes: each member of the object `ext`
 * (taken over, freed here also on failure; NULL for none) is added to the envelope as given,
 * e.g. {"eseq": 42}. Extension names are lowercase a-z and 0-9, at most 20 characters
 * (CloudEvents 1.0 section 3.1.1); CM_EINVAL otherwise. */
cm_err cm_event_build_ext(const char *id, const char *type, const char *source,
                          const char *subject, const char *tenant, int64_t time_ms, cJSON *data,
                          cJSON *ext, char **out);

#endif
