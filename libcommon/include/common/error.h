/* error.h - the one error enum of the project and its messages (after libuv's uv_errno_t). */
#ifndef COMMON_ERROR_H
#define COMMON_ERROR_H

/* Every fallible function in libcommon and the services returns one of these and writes
 * its results through out-parameters. "Not found" and "try again" are outcomes, not NULL. */
typedef enum cm_err {
    CM_OK = 0,
    CM_EINVAL,     /* the input is malformed or breaks a rule */
    CM_ENOMEM,     /* an allocation failed */
    CM_ENOTFOUND,  /* the thing does not exist (or belongs to another tenant) */
    CM_ECONFLICT,  /* a unique key or a state rule was violated */
    CM_EAGAIN,     /* transient: the same call may succeed later */
    CM_EUNAUTH,    /* credentials missing, malformed, expired or forged */
    CM_EFORBIDDEN, /* authenticated but not allowed */
    CM_ETOOBIG,    /* a size or count limit was exceeded */
    CM_EIO,        /* a dependency (MongoDB, Kafka, Redis, upstream) failed */
    CM_ETIMEOUT,   /* a dependency did not answer in time */
    CM_ELIMIT,     /* a rate limit was hit */
    CM_EINTERNAL,  /* a bug or an impossible state */
    CM_ERR_COUNT
} cm_err;

/* Returns a static, human-readable message for `err`; never NULL. */
const char *cm_strerror(cm_err err);

/* Returns the enum's symbolic name ("CM_ENOTFOUND"); never NULL. */
const char *cm_err_name(cm_err err);

#endif
