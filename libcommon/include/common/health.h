/* health.h - the readiness check shared by the services that depend on MongoDB and Kafka. */
#ifndef COMMON_HEALTH_H
#define COMMON_HEALTH_H

#include <stddef.h>

#include "common/error.h"
#include "common/kafka.h"
#include "common/mongo.h"

/* The dependencies a service's /health/ready checks; a NULL member is not checked. */
typedef struct cm_health_deps {
    cm_mongo *mongo;
    cm_kafka_producer *kafka;
} cm_health_deps;

/* A cm_http_ready_fn over a cm_health_deps (`ud`): CM_EIO with the failing dependency named
 * in `detail` (size n) when MongoDB or Kafka does not answer, CM_OK otherwise. */
cm_err cm_health_ready(void *ud, char *detail, size_t n);

#endif
