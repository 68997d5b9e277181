/* user_rules.c - identity rules as plain functions: ids, usernames, passwords, Basic auth. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/json.h"
#include "common/jwt.h"
#include "common/utf8.h"
#include "user.h"

int user_username_normalize(const char *in, char *out, size_t n)
{
    size_t len = strlen(in);
    if (len < USER_USERNAME_MIN || len > USER_USERNAME_MAX || len >= n)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tolower((unsigned char)in[i]);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
        out[i] = (char)c;
    }
    out[len] = '\0';
    return 1;
}

/* The most common passwords of the public breach lists, refused outright (NIST SP 800-63B
 * 5.1.1.2 asks for a blocklist); the full check belongs to the users issue. */
static const char *const common_passwords[] = {
    "password", "12345678", "123456789", "1234567890", "qwertyuiop", "password1", "iloveyou1",
    "11111111", "00000000", "abcdefgh", "qwerty123", "letmein123", "welcome1", "passw0rd",
    NULL};

const char *user_password_problem(const char *password)
{
    size_t bytes = strlen(password);
    size_t chars;

    if (!cm_utf8_valid(password, bytes))
        return "the password must be valid UTF-8";
    chars = cm_utf8_count(password, bytes);
    if (chars < USER_PASSWORD_MIN)
        return "the password must have at least 8 characters";
    if (chars > USER_PASSWORD_MAX)
        return "the password must have at most 128 characters";
    for (const char *const *p = common_passwords; *p; p++)
        if (strcasecmp(*p, password) == 0)
            return "the password is one of the most common passwords";
    return NULL;
}

int user_parse_basic(const char *header, char *key, size_t kn, char *secret, size_t sn)
{
    unsigned char buf[512];
    long len;
    char *colon;
    size_t blen;

    if (header == NULL || strncasecmp(header, "Basic ", 6) != 0)
        return 0;
    header += 6;
    blen = strlen(header);
    /* Standard base64 (RFC 7617), mapped onto the base64url decoder. */
    char tmp[700];
    if (blen >= sizeof(tmp))
        return 0;
    size_t t = 0;
    for (size_t i = 0; i < blen; i++) {
        char c = header[i];
        if (c == '=')
            break;
        tmp[t++] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    len = cm_base64url_decode(tmp, t, buf, sizeof(buf) - 1);
    if (len <= 0)
        return 0;
    buf[len] = '\0';
    if (memchr(buf, '\0', (size_t)len))
        return 0;
    colon = strchr((char *)buf, ':');
    if (colon == NULL)
        return 0;
    *colon = '\0';
    if (strlen((char *)buf) >= kn || strlen(colon + 1) >= sn)
        return 0;
    snprintf(key, kn, "%s", (char *)buf);
    snprintf(secret, sn, "%s", colon + 1);
    return key[0] && secret[0];
}

void user_sha256_hex(const char *s, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, h, sizeof(h));
}

void user_key(const char *tenant, const char *id, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", tenant, id);
}

void user_printable(const char *in, char *out, size_t n)
{
    size_t i = 0;
    if (n == 0)
        return;
    for (; in[i] && i + 1 < n; i++)
        out[i] = ((unsigned char)in[i] >= 0x20 && (unsigned char)in[i] < 0x7f) ? in[i] : '?';
    out[i] = '\0';
}

int user_is_active(const bson_t *user)
{
    return strcmp(cm_bson_str(user, "status", "active"), "active") == 0;
}

/* The permission vocabulary: what services check with cm_auth_can. */
#define PERMS_MEMBER                                                                          \
    "conversation.create conversation.read message.send message.read message.edit.own "     \
    "message.delete.own reaction.add user.read user.search user.block"
#define PERMS_MODERATOR                                                                       \
    PERMS_MEMBER " message.edit.any message.delete.any member.remove member.mute user.ban "    \
                 "moderation.review"
#define PERMS_ADMIN PERMS_MODERATOR " user.manage role.manage tenant.manage"

const char *user_permissions_all(void)
{
    return PERMS_ADMIN;
}

int user_role_builtin_perms(const char *role, char *out, size_t n)
{
    const char *p = strcmp(role, "member") == 0      ? PERMS_MEMBER
                    : strcmp(role, "moderator") == 0 ? PERMS_MODERATOR
                    : strcmp(role, "tenant_admin") == 0 ? "*"
                                                        : NULL;
    if (p == NULL)
        return 0;
    snprintf(out, n, "%s", p);
    return 1;
}

int user_role_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > USER_ROLE_NAME_MAX || !(name[0] >= 'a' && name[0] <= 'z'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int list_has(const char *list, const char *word, size_t wlen)
{
    for (const char *p = list; (p = strstr(p, word)) != NULL; p++) {
        /* strstr matches on the NUL-terminated word; compare the prefix of `wlen` bytes */
        if ((p == list || p[-1] == ' ') && (p[wlen] == '\0' || p[wlen] == ' '))
            return 1;
    }
    return 0;
}

int user_permission_known(const char *perm)
{
    size_t n = strlen(perm);
    return n > 0 && strchr(perm, ' ') == NULL && list_has(PERMS_ADMIN, perm, n);
}

void user_perms_add_list(char *perms, size_t n, const char *list)
{
    char word[128];
    const char *p = list;

    while (*p) {
        size_t len = strcspn(p, " ");
        if (len > 0 && len < sizeof(word)) {
            memcpy(word, p, len);
            word[len] = '\0';
            size_t have = strlen(perms);
            if (!list_has(perms, word, len) && have + (have ? 1 : 0) + len < n)
                snprintf(perms + have, n - have, "%s%s", have ? " " : "", word);
        }
        p += len;
        while (*p == ' ')
            p++;
    }
}

void user_settings_defaults(user_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->send_rate_per_min = 60;
    s->api_rate_per_min = 1200;
    s->message_max_chars = 5000;
    s->group_member_max = 1000;
    s->edit_window_s = 900;
    s->retention_days = 0;
}

int user_origin_valid(const char *origin)
{
    const char *h;
    size_t len = strlen(origin);

    if (len > USER_ORIGIN_MAX)
        return 0;
    if (strncmp(origin, "https://", 8) == 0)
        h = origin + 8;
    else if (strncmp(origin, "http://", 7) == 0)
        h = origin + 7;
    else
        return 0;
    if (*h == '[') { /* IPv6 literal */
        const char *end = strchr(h, ']');
        if (end == NULL || end == h + 1)
            return 0;
        for (const char *p = h + 1; p < end; p++)
            if (!(isxdigit((unsigned char)*p) || *p == ':' || *p == '.') || isupper((unsigned char)*p))
                return 0;
        h = end + 1;
    } else {
        const char *start = h;
        while ((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') || *h == '-' || *h == '.')
            h++;
        if (h == start || start[0] == '.' || start[0] == '-' || h[-1] == '.' || h[-1] == '-')
            return 0;
    }
    if (*h == ':') {
        char *end;
        long port;
        if (!isdigit((unsigned char)h[1]))
            return 0;
        port = strtol(h + 1, &end, 10);
        if (*end != '\0' || port < 1 || port > 65535 || h[1] == '0')
            return 0;
        return 1;
    }
    return *h == '\0';
}

static int secret_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < USER_WEBHOOK_SECRET_MIN || n > USER_WEBHOOK_SECRET_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* Replaces list/count with the array of origins `name` of `patch`, when present: at most
 * USER_ORIGINS_MAX valid origins, none repeated. CM_EINVAL with the reason in `detail`, the
 * list then partly overwritten (the caller works on a copy of the settings). */
static cm_err origins_apply(const cJSON *patch, const char *name,
                            char list[][USER_ORIGIN_MAX + 1], int *count, char *detail, size_t n)
{
    const cJSON *origins = cJSON_GetObjectItemCaseSensitive(patch, name), *o;
    int k = 0;

    if (origins == NULL)
        return CM_OK;
    if (!cJSON_IsArray(origins) || cJSON_GetArraySize(origins) > USER_ORIGINS_MAX) {
        snprintf(detail, n, "field '%s' must be an array of at most %d origins", name,
                 USER_ORIGINS_MAX);
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(o, origins)
    {
        if (!cJSON_IsString(o) || !user_origin_valid(o->valuestring)) {
            snprintf(detail, n,
                     "field '%s' item %d must be an origin such as "
                     "https://app.example.com or http://localhost:3000",
                     name, k);
            return CM_EINVAL;
        }
        for (int i = 0; i < k; i++)
            if (strcmp(list[i], o->valuestring) == 0) {
                snprintf(detail, n, "field '%s' repeats %s", name, o->valuestring);
                return CM_EINVAL;
            }
        snprintf(list[k++], USER_ORIGIN_MAX + 1, "%s", o->valuestring);
    }
    *count = k;
    return CM_OK;
}

cm_err user_settings_apply(const cJSON *patch, user_settings *s, char *detail, size_t n)
{
    static const char *const allowed[] = {
        "self_registration", "send_rate_per_min", "api_rate_per_min", "message_max_chars",
        "group_member_max",  "edit_window_s",     "retention_days",   "ws_allowed_origins",
        "cors_allowed_origins", "webhook_secret", "erase_policy",   NULL};
    user_settings t = *s;
    const char *secret = NULL, *policy = NULL;

    if (!cJSON_IsObject(patch)) {
        snprintf(detail, n, "field 'settings' must be an object");
        return CM_EINVAL;
    }
    if (cm_json_only_keys(patch, allowed, detail, n) ||
        cm_json_bool(patch, "self_registration", 0, &t.self_registration, detail, n) ||
        cm_json_long(patch, "send_rate_per_min", 0, 1, 100000, &t.send_rate_per_min, detail, n) ||
        cm_json_long(patch, "api_rate_per_min", 0, 1, 1000000, &t.api_rate_per_min, detail, n) ||
        cm_json_long(patch, "message_max_chars", 0, 1, 20000, &t.message_max_chars, detail, n) ||
        cm_json_long(patch, "group_member_max", 0, 2, 100000, &t.group_member_max, detail, n) ||
        cm_json_long(patch, "edit_window_s", 0, 0, 604800, &t.edit_window_s, detail, n) ||
        cm_json_long(patch, "retention_days", 0, 0, 3650, &t.retention_days, detail, n) ||
        cm_json_string(patch, "webhook_secret", 0, 0, USER_WEBHOOK_SECRET_MAX * 4, &secret,
                       detail, n) ||
        cm_json_string(patch, "erase_policy", 0, 1, 16, &policy, detail, n))
        return CM_EINVAL;
    if (policy) {
        if (strcmp(policy, "anonymize") != 0 && strcmp(policy, "delete") != 0) {
            snprintf(detail, n, "field 'erase_policy' must be 'anonymize' or 'delete'");
            return CM_EINVAL;
        }
        t.erase_delete = strcmp(policy, "delete") == 0;
    }
    if (secret) {
        if (!secret_valid(secret)) {
            snprintf(detail, n,
                     "field 'webhook_secret' must be %d..%d printable ASCII characters without "
                     "spaces",
                     USER_WEBHOOK_SECRET_MIN, USER_WEBHOOK_SECRET_MAX);
            return CM_EINVAL;
        }
        snprintf(t.webhook_secret, sizeof(t.webhook_secret), "%s", secret);
    }
    if (origins_apply(patch, "ws_allowed_origins", t.origins, &t.n_origins, detail, n) ||
        origins_apply(patch, "cors_allowed_origins", t.cors_origins, &t.n_cors_origins, detail,
                      n))
        return CM_EINVAL;
    *s = t;
    return CM_OK;
}

int user_email_normalize(const char *in, char *out, size_t n)
{
    size_t len = strlen(in);
    const char *at = strchr(in, '@'), *d;
    int dots = 0;

    if (len == 0 || len > USER_EMAIL_MAX || len >= n || at == NULL || at == in ||
        strchr(at + 1, '@') != NULL)
        return 0;
    for (const char *p = in; p < at; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e || strchr("\"<>,;()[]\\", *p))
            return 0;
    d = at + 1;
    if (*d == '\0' || *d == '.' || *d == '-' || in[len - 1] == '.' || in[len - 1] == '-')
        return 0;
    for (const char *p = d; *p; p++) {
        unsigned char c = (unsigned char)tolower((unsigned char)*p);
        if (c == '.') {
            if (p[1] == '.' || p[1] == '-' || p[-1] == '-')
                return 0;
            dots++;
        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return 0;
        }
    }
    if (dots == 0)
        return 0;
    for (size_t i = 0; i <= len; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    return 1;
}

static int json_depth(const cJSON *v)
{
    int max = 0;
    const cJSON *c;
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return 0;
    cJSON_ArrayForEach(c, v)
    {
        int d = json_depth(c);
        if (d > max)
            max = d;
    }
    return max + 1;
}

cm_err user_metadata_check(const cJSON *v, char **out, char *detail, size_t n)
{
    char *s;

    if (!cJSON_IsObject(v)) {
        snprintf(detail, n, "field 'metadata' must be an object");
        return CM_EINVAL;
    }
    if (json_depth(v) > USER_METADATA_DEPTH) {
        snprintf(detail, n, "field 'metadata' nests deeper than %d levels", USER_METADATA_DEPTH);
        return CM_EINVAL;
    }
    s = cJSON_PrintUnformatted(v);
    if (s == NULL)
        return CM_ENOMEM;
    if (strlen(s) > USER_METADATA_MAX) {
        snprintf(detail, n, "field 'metadata' is %zu bytes as JSON; at most %d are allowed",
                 strlen(s), USER_METADATA_MAX);
        free(s);
        return CM_ETOOBIG;
    }
    *out = s;
    return CM_OK;
}

/* Copies and lower-cases ASCII letters; when `out` is too small, cuts at a character
 * boundary so the result stays valid UTF-8. */
static void lower_ascii(const char *in, size_t len, char *out, size_t n)
{
    size_t i = 0;
    for (; i < len && i + 1 < n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    while (i > 0 && i < len && ((unsigned char)in[i] & 0xC0) == 0x80)
        i--; /* in[i] continues a character: drop its start too */
    out[i] = '\0';
}

static int add_key(char keys[][65], int k, const char *s, size_t len)
{
    char buf[65];
    if (len == 0 || k == USER_SEARCH_KEYS_MAX)
        return k;
    lower_ascii(s, len, buf, sizeof(buf));
    for (int i = 0; i < k; i++)
        if (strcmp(keys[i], buf) == 0)
            return k;
    memcpy(keys[k], buf, strlen(buf) + 1);
    return k + 1;
}

int user_search_keys(const char *name, const char *username, char keys[][65])
{
    int k = 0;
    const char *p = name ? name : "";

    k = add_key(keys, k, p, strlen(p));
    while (*p) {
        size_t len = strcspn(p, " \t");
        k = add_key(keys, k, p, len);
        p += len;
        while (*p == ' ' || *p == '\t')
            p++;
    }
    if (username)
        k = add_key(keys, k, username, strlen(username));
    return k;
}

int user_search_normalize(const char *q, char *out, size_t n)
{
    size_t len = strlen(q), chars;
    if (len == 0 || !cm_utf8_valid(q, len) || cm_utf8_has_control(q, len))
        return 0;
    chars = cm_utf8_count(q, len);
    if (chars > USER_SEARCH_MAX || len >= n)
        return 0;
    lower_ascii(q, len, out, n);
    return 1;
}

int user_regex_prefix(const char *prefix, char *out, size_t n)
{
    size_t o = 0;

    if (n < 2)
        return -1;
    out[o++] = '^';
    for (const char *p = prefix; *p; p++) {
        int meta = strchr("\\^$.|?*+()[]{}", *p) != NULL;
        if (o + (size_t)meta + 2 > n)
            return -1;
        if (meta)
            out[o++] = '\\';
        out[o++] = *p;
    }
    out[o] = '\0';
    return 0;
}
