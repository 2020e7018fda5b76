/*
 * JSON pieces shared by the bridge and requests: base64 and a payload as a
 * JSON member.
 */
#include "internal.h"

/* Adds counter v to o under name. */
static void cwm_json_count(cJSON *o, const char *name,
                           const atomic_uint_fast64_t *v)
{
	cJSON_AddNumberToObject(o, name, (double)atomic_load(v));
}

/* -- base64 ---------------------------------------------------------------- */

static char *cwm_base64(const void *data, size_t n)
{
	static const char t[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		*o++ = t[v >> 18];
		*o++ = t[(v >> 12) & 63];
		*o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
		*o++ = i + 2 < n ? t[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* Adds "payload": the text when it is UTF-8, else base64 and
 * "base64":true (how the bridge carries payloads everywhere). Returns 0 or
 * MG_MQTT_ERR_NOMEM. */
static int cwm_add_payload(cJSON *o, const void *payload, size_t len)
{
	char *text;
	int utf8 = cwm_utf8_text(payload, len);
	if (utf8) {
		if ((text = malloc(len + 1)) == NULL)
			return MG_MQTT_ERR_NOMEM;
		if (len > 0)
			memcpy(text, payload, len);
		text[len] = '\0';
	} else if ((text = cwm_base64(payload, len)) == NULL) {
		return MG_MQTT_ERR_NOMEM;
	}
	cJSON *v = cJSON_AddStringToObject(o, "payload", text);
	free(text);
	if (v == NULL || (!utf8 && cJSON_AddBoolToObject(o, "base64", 1) == NULL))
		return MG_MQTT_ERR_NOMEM;
	return 0;
}

/* name: v as a string, or null when v is NULL. */
static void cwm_json_str_or_null(cJSON *o, const char *name, const char *v)
{
	if (v != NULL)
		cJSON_AddStringToObject(o, name, v);
	else
		cJSON_AddNullToObject(o, name);
}
