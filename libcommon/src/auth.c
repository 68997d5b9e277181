/* auth.c - bearer token check shared by every service. */
#include "common/auth.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* 401 with the RFC 6750 challenge. */
static cm_err refuse(cm_http_req *req, const char *detail)
{
    cm_http_add_header(req, "WWW-Authenticate", "Bearer");
    cm_http_reply_error(req, CM_EUNAUTH, detail);
    return CM_EUNAUTH;
}

static cm_auth_check_fn check_fn;
static void *check_ud;

void cm_auth_set_check(cm_auth_check_fn fn, void *ud)
{
    check_fn = fn;
    check_ud = ud;
}

cm_err cm_auth_bearer(cm_http_req *req, const cm_jwt *verifier, cm_jwt_claims *claims)
{
    const char *h = cm_http_header(req, "Authorization");
    char detail[160];
    cm_jwt_claims c;
    cm_err rc;

    if (h == NULL)
        return refuse(req, "an access token is required (Authorization: Bearer)");
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return refuse(req, "the Authorization header must use the Bearer scheme");
    if (cm_jwt_verify(verifier, h + 7, time(NULL), &c, detail, sizeof(detail)) != CM_OK)
        return refuse(req, detail);
    if (check_fn) {
        detail[0] = '\0';
        rc = check_fn(check_ud, &c, detail, sizeof(detail));
        if (rc == CM_EUNAUTH)
            return refuse(req, detail[0] ? detail : "the token is no longer accepted");
        if (rc != CM_OK) {
            cm_http_add_header(req, "Retry-After", "1");
            cm_http_reply_error(req, CM_EIO, "the session state cannot be checked right now");
            return CM_EIO;
        }
    }
    *claims = c;
    return CM_OK;
}

/* Whether the space-separated `list` holds the word `word`. */
static int has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    if (n == 0) /* strstr finds "" everywhere and p += 0 would never advance */
        return 0;
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n) {
        int start = (p == list || p[-1] == ' ');
        int end = (p[n] == '\0' || p[n] == ' ');
        if (start && end)
            return 1;
    }
    return 0;
}

int cm_auth_has_role(const cm_jwt_claims *claims, const char *role)
{
    return has_word(claims->roles, role);
}

int cm_auth_can(const cm_jwt_claims *claims, const char *perm)
{
    if (perm[0] == '\0')
        return 0;
    return has_word(claims->perms, perm) || has_word(claims->perms, "*");
}

int cm_user_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > CM_USER_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}
