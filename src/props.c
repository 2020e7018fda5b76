/*
 * MQTT 5 properties: checking, copying, and converting to and from paho's.
 */
#include "internal.h"

/* Deep copy of MQTT 5 properties into one block; NULL for none. */
static int cwm_props_dup(const struct mg_mqtt_props *p,
                         struct mg_mqtt_props **out)
{
	*out = NULL;
	if (p == NULL ||
	    (p->user_count == 0 && p->message_expiry == 0 &&
	     p->response_topic == NULL && p->correlation_data == NULL &&
	     p->content_type == NULL && !p->payload_utf8))
		return 0;
	size_t size = sizeof(*p) + p->user_count * sizeof(*p->user) +
	              p->correlation_len;
	for (size_t i = 0; i < p->user_count; i++)
		size += strlen(p->user[i].name) + strlen(p->user[i].value) + 2;
	if (p->response_topic != NULL)
		size += strlen(p->response_topic) + 1;
	if (p->content_type != NULL)
		size += strlen(p->content_type) + 1;
	struct mg_mqtt_props *d = malloc(size);
	if (d == NULL)
		return MG_MQTT_ERR_NOMEM;
	*d = *p;
	struct mg_mqtt_user_property *u = (void *)(d + 1);
	char *s = (char *)(u + p->user_count);
	for (size_t i = 0; i < p->user_count; i++) {
		u[i].name = strcpy(s, p->user[i].name);
		s += strlen(s) + 1;
		u[i].value = strcpy(s, p->user[i].value);
		s += strlen(s) + 1;
	}
	d->user = p->user_count > 0 ? u : NULL;
	if (p->response_topic != NULL) {
		d->response_topic = strcpy(s, p->response_topic);
		s += strlen(s) + 1;
	}
	if (p->content_type != NULL) {
		d->content_type = strcpy(s, p->content_type);
		s += strlen(s) + 1;
	}
	if (p->correlation_data != NULL) {
		d->correlation_data = memcpy(s, p->correlation_data,
		                             p->correlation_len);
	}
	*out = d;
	return 0;
}

static int cwm_props_check(const struct mg_mqtt_props *p, size_t *bytes)
{
	*bytes = 0;
	if (p == NULL)
		return 0;
	if (p->user_count > 0 && p->user == NULL)
		return MG_MQTT_ERR_INVALID;
	if (p->correlation_len > 0 && p->correlation_data == NULL)
		return MG_MQTT_ERR_INVALID;
	if (p->correlation_len > 65535)
		return MG_MQTT_ERR_TOO_LARGE;
	for (size_t i = 0; i < p->user_count; i++) {
		const char *n = p->user[i].name, *v = p->user[i].value;
		if (n == NULL || v == NULL)
			return MG_MQTT_ERR_INVALID;
		size_t nl = strlen(n), vl = strlen(v);
		if (nl > 65535 || vl > 65535)
			return MG_MQTT_ERR_TOO_LARGE;
		if (!cwm_utf8_valid(n, nl) || !cwm_utf8_valid(v, vl))
			return MG_MQTT_ERR_INVALID;
		*bytes += nl + vl + 5;
	}
	if (p->response_topic != NULL) {
		if (mg_mqtt_topic_valid(p->response_topic) != 0)
			return MG_MQTT_ERR_TOPIC;
		*bytes += strlen(p->response_topic) + 3;
	}
	if (p->content_type != NULL) {
		size_t n = strlen(p->content_type);
		if (n > 65535)
			return MG_MQTT_ERR_TOO_LARGE;
		if (!cwm_utf8_valid(p->content_type, n))
			return MG_MQTT_ERR_INVALID;
		*bytes += n + 3;
	}
	*bytes += p->correlation_len + 3 + 5 + 2;
	return 0;
}

/* Adds a string or binary property (paho copies data) to o. */
static void cwm_prop_add_data(MQTTProperties *o, enum MQTTPropertyCodes id,
                              const void *data, size_t len)
{
	MQTTProperty pr;
	memset(&pr, 0, sizeof(pr));
	pr.identifier = id;
	pr.value.data.data = (char *)data;
	pr.value.data.len = (int)len;
	MQTTProperties_add(o, &pr);
}

/* Adds a four-byte integer property to o. */
static void cwm_prop_add_int4(MQTTProperties *o, enum MQTTPropertyCodes id,
                              unsigned v)
{
	MQTTProperty pr;
	memset(&pr, 0, sizeof(pr));
	pr.identifier = id;
	pr.value.integer4 = v;
	MQTTProperties_add(o, &pr);
}

/* Builds paho properties from ours (paho copies string data). */
static void cwm_props_to_paho(const struct mg_mqtt_props *p, MQTTProperties *o)
{
	MQTTProperty pr;
	for (size_t i = 0; i < p->user_count; i++) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
		pr.value.data.data = (char *)p->user[i].name;
		pr.value.data.len = (int)strlen(p->user[i].name);
		pr.value.value.data = (char *)p->user[i].value;
		pr.value.value.len = (int)strlen(p->user[i].value);
		MQTTProperties_add(o, &pr);
	}
	if (p->message_expiry != 0)
		cwm_prop_add_int4(o, MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL,
		                  p->message_expiry);
	if (p->response_topic != NULL)
		cwm_prop_add_data(o, MQTTPROPERTY_CODE_RESPONSE_TOPIC,
		                  p->response_topic, strlen(p->response_topic));
	if (p->correlation_data != NULL)
		cwm_prop_add_data(o, MQTTPROPERTY_CODE_CORRELATION_DATA,
		                  p->correlation_data, p->correlation_len);
	if (p->content_type != NULL)
		cwm_prop_add_data(o, MQTTPROPERTY_CODE_CONTENT_TYPE, p->content_type,
		                  strlen(p->content_type));
	if (p->payload_utf8) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_PAYLOAD_FORMAT_INDICATOR;
		pr.value.byte = 1;
		MQTTProperties_add(o, &pr);
	}
}

/* Our view of received paho properties, in one malloc()ed block returned
 * through *mem (NULL when there are none). */
static void cwm_props_from_paho(MQTTProperties *pp, struct mg_mqtt_props *p,
                                void **mem)
{
	size_t nuser = 0, size = 0;
	*mem = NULL;
	memset(p, 0, sizeof(*p));
	for (int i = 0; i < pp->count; i++) {
		const MQTTProperty *pr = &pp->array[i];
		switch (pr->identifier) {
		case MQTTPROPERTY_CODE_USER_PROPERTY:
			nuser++;
			size += (size_t)pr->value.data.len + (size_t)pr->value.value.len + 2;
			break;
		case MQTTPROPERTY_CODE_RESPONSE_TOPIC:
		case MQTTPROPERTY_CODE_CONTENT_TYPE:
		case MQTTPROPERTY_CODE_CORRELATION_DATA:
			size += (size_t)pr->value.data.len + 1;
			break;
		default:
			break;
		}
	}
	size += nuser * sizeof(struct mg_mqtt_user_property);
	char *block = size > 0 ? malloc(size) : NULL;
	if (size > 0 && block == NULL)
		return;
	struct mg_mqtt_user_property *u = (void *)block;
	char *s = block + nuser * sizeof(*u);
	size_t ui = 0;
	for (int i = 0; i < pp->count; i++) {
		const MQTTProperty *pr = &pp->array[i];
		const MQTTLenString *d = &pr->value.data;
		switch (pr->identifier) {
		case MQTTPROPERTY_CODE_USER_PROPERTY:
			u[ui].name = memcpy(s, d->data, (size_t)d->len);
			s[d->len] = '\0';
			s += d->len + 1;
			u[ui].value = memcpy(s, pr->value.value.data,
			                     (size_t)pr->value.value.len);
			s[pr->value.value.len] = '\0';
			s += pr->value.value.len + 1;
			ui++;
			break;
		case MQTTPROPERTY_CODE_RESPONSE_TOPIC:
		case MQTTPROPERTY_CODE_CONTENT_TYPE:
		case MQTTPROPERTY_CODE_CORRELATION_DATA:
			memcpy(s, d->data, (size_t)d->len);
			s[d->len] = '\0';
			if (pr->identifier == MQTTPROPERTY_CODE_RESPONSE_TOPIC)
				p->response_topic = s;
			else if (pr->identifier == MQTTPROPERTY_CODE_CONTENT_TYPE)
				p->content_type = s;
			else {
				p->correlation_data = s;
				p->correlation_len = (size_t)d->len;
			}
			s += d->len + 1;
			break;
		case MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL:
			p->message_expiry = pr->value.integer4;
			break;
		case MQTTPROPERTY_CODE_PAYLOAD_FORMAT_INDICATOR:
			p->payload_utf8 = pr->value.byte == 1;
			break;
		default:
			break;
		}
	}
	p->user = nuser > 0 ? u : NULL;
	p->user_count = nuser;
	*mem = block;
}
