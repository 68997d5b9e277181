/* test_health.c - unit tests of the readiness check over MongoDB and Kafka (common/health.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <mongoc/mongoc.h>

#include "common/config.h"
#include "common/health.h"
#include "common/log.h"
#include "testutil.h"

static void quiet_driver(mongoc_log_level_t level, const char *domain, const char *message,
                         void *ud)
{
    (void)level;
    (void)domain;
    (void)message;
    (void)ud;
}

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_health", CM_LOG_ERROR + 1); /* the failures below are logged; expected */
    mongoc_log_set_handler(quiet_driver, NULL);
    return 0;
}

static void test_nothing_to_check(void **state)
{
    cm_health_deps none = {NULL, NULL};
    char detail[128] = "";
    (void)state;
    assert_int_equal(cm_health_ready(&none, detail, sizeof(detail)), CM_OK);
}

static void test_ready_with_the_local_stack(void **state)
{
    cm_health_deps d = {NULL, NULL};
    char detail[128] = "";
    (void)state;
    assert_int_equal(cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"),
                                     "unit_health", &d.mongo),
                     CM_OK);
    assert_int_equal(cm_kafka_producer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                              "", NULL, NULL, &d.kafka),
                     CM_OK);
    cm_err rc = cm_health_ready(&d, detail, sizeof(detail));
    if (rc != CM_OK)
        fail_msg("not ready: %s", detail);
    cm_kafka_producer_destroy(d.kafka);
    cm_mongo_destroy(d.mongo);
}

static void test_mongo_down(void **state)
{
    cm_health_deps d = {NULL, NULL};
    char uri[128], detail[128] = "";
    (void)state;
    snprintf(uri, sizeof(uri), "mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=300",
             tu_free_port());
    assert_int_equal(cm_mongo_create(uri, "unit_health", &d.mongo), CM_OK);
    assert_int_equal(cm_health_ready(&d, detail, sizeof(detail)), CM_EIO);
    assert_string_equal(detail, "MongoDB does not answer");
    cm_mongo_destroy(d.mongo);
}

static void test_kafka_down(void **state)
{
    cm_health_deps d = {NULL, NULL};
    char brokers[64], detail[128] = "";
    (void)state;
    snprintf(brokers, sizeof(brokers), "127.0.0.1:%d", tu_free_port());
    assert_int_equal(cm_kafka_producer_create(brokers, "", NULL, NULL, &d.kafka), CM_OK);
    assert_int_equal(cm_health_ready(&d, detail, sizeof(detail)), CM_EIO);
    assert_string_equal(detail, "Kafka does not answer");
    cm_kafka_producer_destroy(d.kafka);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_to_check),
        cmocka_unit_test(test_ready_with_the_local_stack),
        cmocka_unit_test(test_mongo_down),
        cmocka_unit_test(test_kafka_down),
    };
    return cmocka_run_group_tests_name("health", tests, setup, NULL);
}
