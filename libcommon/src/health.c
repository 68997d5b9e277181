/* health.c - readiness of MongoDB and Kafka for /health/ready. */
#include "common/health.h"

#include <stdio.h>

cm_err cm_health_ready(void *ud, char *detail, size_t n)
{
    const cm_health_deps *d = ud;
    if (d->mongo && cm_mongo_ping(d->mongo) != CM_OK) {
        snprintf(detail, n, "MongoDB does not answer");
        return CM_EIO;
    }
    if (d->kafka && !cm_kafka_producer_healthy(d->kafka)) {
        snprintf(detail, n, "Kafka does not answer");
        return CM_EIO;
    }
    return CM_OK;
}
