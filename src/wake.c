/*
 * Waking paho's receive thread for a client that connects while others of
 * the process are connected: the connecting count, the list of running
 * clients, and the wake-up traffic.
 *
 * paho has one receive thread for every client of the process. It sleeps
 * in poll() for up to a second when no socket has anything to read, and
 * takes a new client's socket in only when it wakes: once for the TCP
 * connect and once for the CONNACK, so a second or third client took about
 * 2 s to connect where the first took 0.1 s (bare paho too; MQTTAsync's
 * receive thread, MQTTAsync_cycle's 1000 ms timeout). No paho option
 * changes it; traffic on a socket it already polls wakes it. So while a
 * client connects, every connected client of the process sends an
 * UNSUBSCRIBE of a filter nobody holds ("$cwm/wake", answered by UNSUBACK)
 * from its own mqtt-io thread: CWM_WAKE_MS after the connect began, then at
 * doubling gaps up to CWM_WAKE_MAX_MS (a connect to a broker that does not
 * answer costs a few packets a second, not hundreds).
 */
#include "internal.h"

static atomic_int cwm_connecting; /* clients with a connect in progress */
static pthread_mutex_t cwm_running_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mg_mqtt *cwm_running; /* under cwm_running_lock, by run_next */

/* A started client joins the list (start) or leaves it (stop). */
static void cwm_running_add(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_running_lock);
	c->run_next = cwm_running;
	cwm_running = c;
	pthread_mutex_unlock(&cwm_running_lock);
}

static void cwm_running_remove(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_running_lock);
	for (struct mg_mqtt **pp = &cwm_running; *pp != NULL;
	     pp = &(*pp)->run_next)
		if (*pp == c) {
			*pp = c->run_next;
			break;
		}
	pthread_mutex_unlock(&cwm_running_lock);
}

/* [L] c's connect starts (on) or has its result (off). */
static void cwm_connecting_set(struct mg_mqtt *c, int on)
{
	if (on == c->connecting_counted)
		return;
	c->connecting_counted = on;
	if (on)
		atomic_fetch_add(&cwm_connecting, 1);
	else
		atomic_fetch_sub(&cwm_connecting, 1);
}

/* mqtt-io of c, without c->lock: tells the other running clients that a
 * connect is in progress, so that the connected ones start the traffic. */
static void cwm_wake_others(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_running_lock);
	for (struct mg_mqtt *x = cwm_running; x != NULL; x = x->run_next) {
		if (x == c)
			continue;
		pthread_mutex_lock(&x->lock);
		if (x->state == CWM_CONNECTED && x->io_waiting == CWM_IDLE_WAIT)
			pthread_cond_signal(&x->io_cond);
		pthread_mutex_unlock(&x->lock);
	}
	pthread_mutex_unlock(&cwm_running_lock);
}

/* [L] mqtt-io of a connected client: the wake-up UNSUBSCRIBE when another
 * client connects and it is time. Returns 0 when it queued one (to be sent
 * now), else how long until the next one (ms), or -1: nobody connects. */
static int64_t cwm_wake_traffic(struct mg_mqtt *c, int64_t now)
{
	if (atomic_load(&cwm_connecting) == 0 || c->state != CWM_CONNECTED) {
		c->wake_gap = 0;
		return -1;
	}
	if (c->wake_gap == 0) { /* a connect began: the first one soon */
		c->wake_gap = CWM_WAKE_MS;
		c->next_wake = now + CWM_WAKE_MS;
	}
	if (now >= c->next_wake) {
		static const char *const wake[] = {"$cwm/wake"};
		struct cwm_out *r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, wake, NULL, 1);
		if (r != NULL) {
			r->internal = 1;
			r->id = cwm_next_id(c);
			r->next = c->retry;
			c->retry = r;
			if (c->retry_tail == NULL)
				c->retry_tail = r;
		}
		c->wake_gap = c->wake_gap * 2 > CWM_WAKE_MAX_MS ? CWM_WAKE_MAX_MS
		                                                : c->wake_gap * 2;
		c->next_wake = now + c->wake_gap;
		return r != NULL ? 0 : c->wake_gap;
	}
	return c->next_wake - now;
}
