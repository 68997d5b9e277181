/* jws.c - signed JWTs with arbitrary claims through libjwt (jws.h). */
#include "common/jws.h"

#include <stdlib.h>
#include <string.h>

#include <jwt.h>

#include "common/json.h"
#include "common/log.h"

cm_err cm_jws_sign(const char *alg, const char *pem, size_t pem_len, const char *kid,
                   const cJSON *claims, char **out)
{
    jwt_alg_t a;
    jwt_t *jwt = NULL;
    char *json = NULL, *tok = NULL;
    cm_err rc = CM_EINVAL;

    if (strcmp(alg, "RS256") == 0)
        a = JWT_ALG_RS256;
    else if (strcmp(alg, "ES256") == 0)
        a = JWT_ALG_ES256;
    else
        return CM_EINVAL;
    if (pem == NULL || pem_len == 0 || pem_len > 65536 || !cJSON_IsObject(claims))
        return CM_EINVAL;
    if ((json = cm_json_print(claims)) == NULL)
        return CM_ENOMEM;
    if (jwt_new(&jwt) != 0) {
        rc = CM_ENOMEM;
        goto out;
    }
    if (jwt_add_grants_json(jwt, json) != 0 ||
        jwt_set_alg(jwt, a, (const unsigned char *)pem, (int)pem_len) != 0 ||
        (kid != NULL && jwt_add_header(jwt, "kid", kid) != 0))
        goto out;
    if ((tok = jwt_encode_str(jwt)) == NULL) {
        cm_warn("jws: %s signing failed (is the key a %s private key?)", alg,
                a == JWT_ALG_RS256 ? "RSA" : "P-256");
        goto out;
    }
    /* libjwt allocates with malloc unless told otherwise (jwt_set_alloc, never called here). */
    if ((*out = strdup(tok)) == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    rc = CM_OK;
out:
    free(tok);
    jwt_free(jwt);
    free(json);
    return rc;
}
