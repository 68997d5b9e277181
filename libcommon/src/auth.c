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

cm_err cm_auth_bearer(cm_http_req *req, const cm_jwt *verifier, cm_jwt_claims *claims)
{
    const char *h = cm_http_header(req, "Authorization");
    char detail[160];

    if (h == NULL)
        return refuse(req, "an access token is required (Authorization: Bearer)");
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return refuse(req, "the Authorization header must use the Bearer scheme");
    if (cm_jwt_verify(verifier, h + 7, time(NULL), claims, detail, sizeof(detail)) != CM_OK)
        return refuse(req, detail);
    return CM_OK;
}

int cm_auth_has_role(const cm_jwt_claims *claims, const char *role)
{
    size_t n = strlen(role);
    if (n == 0) /* strstr finds "" everywhere and p += 0 would never advance */
        return 0;
    for (const char *p = claims->roles; (p = strstr(p, role)) != NULL; p += n) {
        int start = (p == claims->roles || p[-1] == ' ');
        int end = (p[n] == '\0' || p[n] == ' ');
        if (start && end)
            return 1;
    }
    return 0;
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
