/* user_limits.c - how fast credentials may be tried: per client IP a fixed window, per account
 * a growing backoff after failures (common/ratelimit.h). Accounts are keyed by what was
 * submitted (username, e-mail, API key id), hashed, whether or not it exists, so the limits
 * answer alike for real and unknown accounts and reveal nothing. */
#include <stdio.h>
#include <string.h>

#include "common/ratelimit.h"
#include "user.h"

static const char *const names[] = {"login", "mail", "refresh", "token"};

/* "rl:<kind>:acct:<sha256 of tenant/account, ASCII lower-cased>" */
static void account_key(user_limit kind, const char *tenant, const char *account, char *out,
                        size_t n)
{
    char joined[512], hash[65];
    size_t i;

    snprintf(joined, sizeof(joined), "%s/%s", tenant ? tenant : "", account);
    for (i = 0; joined[i]; i++)
        if (joined[i] >= 'A' && joined[i] <= 'Z')
            joined[i] = (char)(joined[i] - 'A' + 'a');
    user_sha256_hex(joined, hash);
    snprintf(out, n, "rl:%s:acct:%s", names[kind], hash);
}

cm_err user_limit_check(cm_http_req *req, user_ctx *ctx, user_limit kind, const char *tenant,
                        const char *account)
{
    const user_limits *l = &ctx->limits;
    char key[256];
    long per_ip = kind == USER_LIMIT_LOGIN     ? l->login_ip_per_min
                  : kind == USER_LIMIT_MAIL    ? l->mail_ip_per_min
                  : kind == USER_LIMIT_REFRESH ? l->refresh_ip_per_min
                                               : l->token_ip_per_min;

    snprintf(key, sizeof(key), "rl:%s:ip:%s", names[kind], user_client_ip(req, ctx));
    if (cm_ratelimit_window(req, ctx->redis, key, per_ip, 60000,
                            "too many attempts from this address; wait and retry") != CM_OK)
        return CM_ELIMIT;
    if (account == NULL)
        return CM_OK;
    account_key(kind, tenant, account, key, sizeof(key));
    if (kind == USER_LIMIT_MAIL)
        return cm_ratelimit_window(req, ctx->redis, key, l->mail_per_hour, 3600000,
                                   "too many mails asked for this account; wait and retry");
    return cm_ratelimit_backoff_check(req, ctx->redis, key,
                                      "too many failed attempts for this account; wait and retry");
}

void user_limit_failed(user_ctx *ctx, user_limit kind, const char *tenant, const char *account)
{
    char key[256];
    account_key(kind, tenant, account, key, sizeof(key));
    cm_ratelimit_backoff_fail(ctx->redis, key, ctx->limits.free_failures,
                              ctx->limits.backoff_max_s);
}

void user_limit_succeeded(user_ctx *ctx, user_limit kind, const char *tenant, const char *account)
{
    char key[256];
    account_key(kind, tenant, account, key, sizeof(key));
    cm_ratelimit_backoff_clear(ctx->redis, key);
}
