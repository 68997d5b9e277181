/* error.c - messages and names for cm_err. */
#include "common/error.h"

static const struct {
    const char *name;
    const char *msg;
} errs[CM_ERR_COUNT] = {
    [CM_OK] = {"CM_OK", "success"},
    [CM_EINVAL] = {"CM_EINVAL", "invalid input"},
    [CM_ENOMEM] = {"CM_ENOMEM", "out of memory"},
    [CM_ENOTFOUND] = {"CM_ENOTFOUND", "not found"},
    [CM_ECONFLICT] = {"CM_ECONFLICT", "conflict"},
    [CM_EAGAIN] = {"CM_EAGAIN", "try again"},
    [CM_EUNAUTH] = {"CM_EUNAUTH", "unauthenticated"},
    [CM_EFORBIDDEN] = {"CM_EFORBIDDEN", "forbidden"},
    [CM_ETOOBIG] = {"CM_ETOOBIG", "too big"},
    [CM_EIO] = {"CM_EIO", "dependency failure"},
    [CM_ETIMEOUT] = {"CM_ETIMEOUT", "timed out"},
    [CM_ELIMIT] = {"CM_ELIMIT", "rate limited"},
    [CM_EINTERNAL] = {"CM_EINTERNAL", "internal error"},
};

const char *cm_strerror(cm_err err)
{
    if ((unsigned)err >= CM_ERR_COUNT)
        return "unknown error";
    return errs[err].msg;
}

const char *cm_err_name(cm_err err)
{
    if ((unsigned)err >= CM_ERR_COUNT)
        return "CM_E?";
    return errs[err].name;
}
