/* jwt.c - RS256 access tokens over libjwt, with the header, algorithm and claims checked here. */
#include "common/jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <jwt.h>

#include "common/config.h"
#include "common/log.h"
#include "common/uuid.h"

#define MAX_TOKEN 8192 /* bytes; a real access token is well under 2 KiB */

struct cm_jwt {
    jwt_alg_t alg;
    char alg_name[8];
    unsigned char *key;
    size_t key_len;
    char *kid, *iss, *aud;
    long leeway;
};

void cm_jwt_destroy(cm_jwt *j)
{
    if (j == NULL)
        return;
    free(j->key);
    free(j->kid);
    free(j->iss);
    free(j->aud);
    free(j);
}

cm_err cm_jwt_create(const cm_jwt_config *cfg, cm_jwt **out)
{
    cm_jwt *j;

    if (cfg->key == NULL || cfg->key_len == 0 || cfg->alg == NULL || cfg->issuer == NULL ||
        cfg->audience == NULL || !*cfg->issuer || !*cfg->audience)
        return CM_EINVAL;
    /* Only asymmetric RS256 for now: services verify with the public key and cannot mint. */
    if (strcmp(cfg->alg, "RS256") != 0)
        return CM_EINVAL;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return CM_ENOMEM;
    j->alg = JWT_ALG_RS256;
    snprintf(j->alg_name, sizeof(j->alg_name), "%s", cfg->alg);
    j->key = malloc(cfg->key_len + 1);
    j->iss = strdup(cfg->issuer);
    j->aud = strdup(cfg->audience);
    j->kid = cfg->kid ? strdup(cfg->kid) : NULL;
    if (j->key == NULL || j->iss == NULL || j->aud == NULL || (cfg->kid && j->kid == NULL)) {
        cm_jwt_destroy(j);
        return CM_ENOMEM;
    }
    memcpy(j->key, cfg->key, cfg->key_len);
    j->key[cfg->key_len] = '\0';
    j->key_len = cfg->key_len;
    j->leeway = cfg->leeway_s;
    *out = j;
    return CM_OK;
}

cm_err cm_jwt_from_env(const char *key_var, cm_jwt **out)
{
    char *pem = NULL;
    size_t len = 0;
    long leeway;
    cm_err rc = cm_config_file(key_var, 64 * 1024, &pem, &len);

    if (rc != CM_OK) {
        if (rc == CM_ENOTFOUND)
            cm_error("config: %s is required (path to a PEM key)", key_var);
        return rc;
    }
    if (cm_config_long("JWT_LEEWAY_S", 30, 0, 600, &leeway) != CM_OK) {
        free(pem);
        return CM_EINVAL;
    }
    cm_jwt_config cfg = {
        .alg = cm_config_str("JWT_ALG", "RS256"),
        .key = pem,
        .key_len = len,
        .kid = cm_config_str("JWT_KID", "k1"),
        .issuer = cm_config_str("JWT_ISSUER", "chat-platform"),
        .audience = cm_config_str("JWT_AUDIENCE", "chat-api"),
        .leeway_s = leeway,
    };
    rc = cm_jwt_create(&cfg, out);
    if (rc == CM_EINVAL)
        cm_error("config: JWT settings refused (JWT_ALG must be RS256; %s must not be empty)",
                 key_var);
    free(pem);
    return rc;
}

cm_err cm_jwt_sign(const cm_jwt *j, const cm_jwt_claims *c, time_t now, long ttl_s, char **token)
{
    jwt_t *t = NULL;
    cJSON *roles = NULL;
    char *roles_json = NULL, jti[CM_UUID_STRLEN];
    cm_err rc = CM_EINVAL;
    char *s;

    if (c->sub[0] == '\0' || c->tid[0] == '\0' || ttl_s <= 0)
        return CM_EINVAL;
    rc = CM_EINTERNAL;
    if (jwt_new(&t) != 0 || cm_uuid_v7(jti) != CM_OK)
        goto out;
    /* roles go in as a JSON array so verifiers in any language read them naturally. */
    roles = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(roles, "roles");
    char rbuf[sizeof(c->roles)];
    snprintf(rbuf, sizeof(rbuf), "%s", c->roles);
    for (char *save = NULL, *r = strtok_r(rbuf, " ", &save); r; r = strtok_r(NULL, " ", &save))
        cJSON_AddItemToArray(arr, cJSON_CreateString(r));
    roles_json = cJSON_PrintUnformatted(roles);
    if (roles_json == NULL)
        goto out;
    if (jwt_add_grant(t, "sub", c->sub) || jwt_add_grant(t, "tid", c->tid) ||
        (c->sid[0] && jwt_add_grant(t, "sid", c->sid)) || jwt_add_grant(t, "iss", j->iss) ||
        jwt_add_grant(t, "aud", j->aud) || jwt_add_grant(t, "jti", jti) ||
        jwt_add_grant_int(t, "iat", (long)now) || jwt_add_grant_int(t, "nbf", (long)now) ||
        jwt_add_grant_int(t, "exp", (long)now + ttl_s) || jwt_add_grants_json(t, roles_json))
        goto out;
    if (j->kid && jwt_add_header(t, "kid", j->kid))
        goto out;
    if (jwt_set_alg(t, j->alg, j->key, (int)j->key_len) != 0)
        goto out;
    s = jwt_encode_str(t);
    if (s == NULL)
        goto out;
    *token = s;
    rc = CM_OK;
out:
    free(roles_json);
    cJSON_Delete(roles);
    jwt_free(t);
    return rc;
}

long cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '-')
            v = 62;
        else if (ch == '_')
            v = 63;
        else
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (len % 4 == 1)
        return -1;
    return (long)o;
}

long cm_base64url_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0), o = 0, i = 0;

    if (need + 1 > cap)
        return -1;
    for (; i + 2 < len; i += 3) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        out[o++] = tbl[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        out[o++] = tbl[in[i + 2] & 63];
    }
    if (len - i == 1) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[(in[i] & 3) << 4];
    } else if (len - i == 2) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        out[o++] = tbl[(in[i + 1] & 15) << 2];
    }
    out[o] = '\0';
    return (long)o;
}

/* Reads the header before libjwt does, so the token never chooses the algorithm. */
static cm_err check_header(const cm_jwt *j, const char *token, char *detail, size_t n)
{
    const char *dot = strchr(token, '.');
    unsigned char hdr[1024];
    cJSON *h = NULL, *alg, *kid, *typ;
    cm_err rc = CM_EUNAUTH;
    long len;

    if (dot == NULL || strchr(dot + 1, '.') == NULL || strchr(strchr(dot + 1, '.') + 1, '.')) {
        snprintf(detail, n, "the token is not a JWS compact serialisation (three parts)");
        return CM_EUNAUTH;
    }
    len = cm_base64url_decode(token, (size_t)(dot - token), hdr, sizeof(hdr) - 1);
    if (len <= 0) {
        snprintf(detail, n, "the token header is not base64url");
        return CM_EUNAUTH;
    }
    hdr[len] = '\0';
    h = cJSON_ParseWithLength((const char *)hdr, (size_t)len);
    if (!cJSON_IsObject(h)) {
        snprintf(detail, n, "the token header is not a JSON object");
        goto out;
    }
    alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    if (!cJSON_IsString(alg) || strcmp(alg->valuestring, j->alg_name) != 0) {
        snprintf(detail, n, "the token algorithm must be %s", j->alg_name);
        goto out;
    }
    typ = cJSON_GetObjectItemCaseSensitive(h, "typ");
    if (typ && (!cJSON_IsString(typ) || strcasecmp(typ->valuestring, "JWT") != 0)) {
        snprintf(detail, n, "the token type must be JWT");
        goto out;
    }
    kid = cJSON_GetObjectItemCaseSensitive(h, "kid");
    if (j->kid && (!cJSON_IsString(kid) || strcmp(kid->valuestring, j->kid) != 0)) {
        snprintf(detail, n, "the token key id (kid) is unknown");
        goto out;
    }
    rc = CM_OK;
out:
    cJSON_Delete(h);
    return rc;
}

static int copy_claim(jwt_t *t, const char *name, char *dst, size_t cap)
{
    const char *v = jwt_get_grant(t, name);
    if (v == NULL || *v == '\0' || strlen(v) >= cap)
        return -1;
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int audience_matches(jwt_t *t, const char *want)
{
    const char *s = jwt_get_grant(t, "aud");
    char *arr;
    int ok = 0;

    if (s)
        return strcmp(s, want) == 0;
    /* RFC 7519 4.1.3: aud may be an array of strings. */
    arr = jwt_get_grants_json(t, "aud");
    if (arr == NULL)
        return 0;
    cJSON *a = cJSON_Parse(arr), *it;
    cJSON_ArrayForEach(it, a) if (cJSON_IsString(it) && strcmp(it->valuestring, want) == 0) ok = 1;
    cJSON_Delete(a);
    free(arr);
    return ok;
}

cm_err cm_jwt_verify(const cm_jwt *j, const char *token, time_t now, cm_jwt_claims *claims,
                     char *detail, size_t n)
{
    jwt_t *t = NULL;
    cm_err rc = CM_EUNAUTH;
    cm_jwt_claims c;
    const char *iss;
    char *roles = NULL;

    memset(&c, 0, sizeof(c));
    if (token == NULL || *token == '\0') {
        snprintf(detail, n, "no token");
        return CM_EUNAUTH;
    }
    if (strlen(token) > MAX_TOKEN) {
        snprintf(detail, n, "the token is longer than %d bytes", MAX_TOKEN);
        return CM_EUNAUTH;
    }
    if (check_header(j, token, detail, n) != CM_OK)
        return CM_EUNAUTH;
    if (jwt_decode(&t, token, j->key, (int)j->key_len) != 0 || t == NULL) {
        snprintf(detail, n, "the token signature does not verify");
        goto out;
    }
    if (jwt_get_alg(t) != j->alg) { /* belt and braces after the header check */
        snprintf(detail, n, "the token algorithm must be %s", j->alg_name);
        goto out;
    }
    c.exp = (time_t)jwt_get_grant_int(t, "exp");
    if (c.exp <= 0) {
        snprintf(detail, n, "the token has no exp claim");
        goto out;
    }
    if (now > c.exp + j->leeway) {
        snprintf(detail, n, "the token expired");
        goto out;
    }
    c.nbf = (time_t)jwt_get_grant_int(t, "nbf");
    if (c.nbf > 0 && now + j->leeway < c.nbf) {
        snprintf(detail, n, "the token is not valid yet (nbf)");
        goto out;
    }
    c.iat = (time_t)jwt_get_grant_int(t, "iat");
    iss = jwt_get_grant(t, "iss");
    if (iss == NULL || strcmp(iss, j->iss) != 0) {
        snprintf(detail, n, "the token issuer is not accepted");
        goto out;
    }
    if (!audience_matches(t, j->aud)) {
        snprintf(detail, n, "the token audience is not accepted");
        goto out;
    }
    if (copy_claim(t, "sub", c.sub, sizeof(c.sub)) || copy_claim(t, "tid", c.tid, sizeof(c.tid))) {
        snprintf(detail, n, "the token lacks a sub or tid claim");
        goto out;
    }
    copy_claim(t, "sid", c.sid, sizeof(c.sid));
    roles = jwt_get_grants_json(t, "roles");
    if (roles) {
        cJSON *a = cJSON_Parse(roles), *it;
        size_t off = 0;
        cJSON_ArrayForEach(it, a)
        {
            if (!cJSON_IsString(it))
                continue;
            int w = snprintf(c.roles + off, sizeof(c.roles) - off, "%s%s", off ? " " : "",
                             it->valuestring);
            if (w < 0 || (size_t)w >= sizeof(c.roles) - off)
                break;
            off += (size_t)w;
        }
        cJSON_Delete(a);
    }
    *claims = c;
    rc = CM_OK;
out:
    free(roles);
    jwt_free(t);
    return rc;
}
