/*
 * civetweb_mqtt.hpp: an optional, header-only C++17 layer over
 * civetweb_mqtt.h for programs on CivetWeb's CivetServer (docs/cpp.md).
 *
 *   civetweb_mqtt::split_options()  one option list (CivetServer's, with the
 *                                   clients' MQTT_* options in it) into
 *                                   CivetWeb's and the clients'; an unknown
 *                                   name is an error that names it
 *   civetweb_mqtt::client           an RAII client: std::function handlers,
 *                                   std::string_view topics and payloads
 *
 * Errors are return values (the C library's MG_MQTT_ERR_* codes, with
 * civetweb_mqtt::strerror()), never exceptions; the wrapper throws only
 * what the standard library throws (std::bad_alloc) while handlers are
 * registered. No exception crosses into the C library: each handler runs
 * inside a try block; what it throws is caught there, counted
 * (exceptions_caught()) and reported to on_exception(), or else logged
 * through on_log(), or else written to stderr.
 *
 * Lifetimes (docs/cpp.md): declare the client BEFORE the CivetServer, so
 * that the server is destroyed first, which joins its worker threads,
 * and the client after it: a request handler that uses the client never
 * runs while it is freed. Handlers are registered before start().
 */
#ifndef CIVETWEB_MQTT_HPP
#define CIVETWEB_MQTT_HPP

#include "civetweb_mqtt.h"

#include <atomic>
#include <cstdio>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace civetweb_mqtt {

/* The text of an MG_MQTT_ERR_* code. */
inline std::string_view strerror(int err) noexcept
{
	return mg_mqtt_strerror(err);
}

/* A received message; everything it refers to is valid until the handler
 * returns (copy what you keep). */
struct message {
	std::string_view topic;
	std::string_view payload;
	int qos;
	bool retain;
	bool dup;
	const mg_mqtt_message *c_message; /* the C view: properties, params */

	/* The value of {name} in the handler's filter ("" when none). */
	std::string param(const char *name) const
	{
		char buf[256];
		int n = mg_mqtt_param(c_message, name, buf, sizeof(buf));
		return n >= 0 ? std::string(buf, (size_t)n < sizeof(buf) ? (size_t)n
		                                                         : sizeof(buf) - 1)
		              : std::string();
	}
};

/* What split_options() gives. */
struct options {
	std::vector<std::string> civetweb; /* for CivetServer's constructor */
	std::vector<std::string> mqtt;     /* for client::start() */
	std::vector<std::string> prefixes; /* the clients' prefixes found */
	std::string error;                 /* empty when split_options() is true */
};

/* Splits one option list (name, value, name, value, ...: what CivetServer
 * takes) as mg_mqtt_config_read() does, and checks it as
 * mg_mqtt_config_check() does. path: a civetweb.conf file read first, or
 * nullptr. False, with out.error naming the option, for a name neither
 * CivetWeb nor a client takes, a name without a value, an unreadable
 * file. */
inline bool split_options(const std::vector<std::string> &all, options &out,
                          const char *path = nullptr)
{
	std::vector<const char *> list;
	char err[1024] = "";
	mg_mqtt_config cfg{};
	out = options();
	list.reserve(all.size() + 1);
	for (const std::string &s : all)
		list.push_back(s.c_str());
	list.push_back(nullptr);
	if (all.size() % 2 != 0) {
		out.error = "option '" + all.back() + "' has no value";
		return false;
	}
	if (mg_mqtt_config_read(&cfg, path, list.data(), err, sizeof(err)) != 0 ||
	    mg_mqtt_config_check(&cfg, err, sizeof(err)) != 0) {
		out.error = err;
		mg_mqtt_config_free(&cfg);
		return false;
	}
	for (const char **p = cfg.civetweb; *p != nullptr; p++)
		out.civetweb.emplace_back(*p);
	for (const char **p = cfg.mqtt; *p != nullptr; p++)
		out.mqtt.emplace_back(*p);
	for (const char **p = cfg.prefixes; *p != nullptr; p++)
		out.prefixes.emplace_back(*p);
	mg_mqtt_config_free(&cfg);
	return true;
}

/* One MQTT client (one prefix). Not copyable, not movable: handlers hold
 * its address. Thread-safety as in civetweb_mqtt.h: publish(),
 * subscribe(), connected() from any thread; the rest from one thread. */
class client {
public:
	using message_handler = std::function<void(const message &)>;
	using connect_handler =
	    std::function<void(bool connected, std::string_view detail)>;
	using log_handler = std::function<void(int level, std::string_view text)>;
	using exception_handler = std::function<void(std::string_view what)>;

	/* prefix: the options' prefix (MQTT reads MQTT_*). valid() is false
	 * when the C client could not be created (out of memory). */
	explicit client(const char *prefix = "MQTT")
	    : c_(mg_mqtt_create(prefix)), st_(std::make_unique<state>())
	{
	}
	~client() { stop(); }
	client(const client &) = delete;
	client &operator=(const client &) = delete;

	bool valid() const noexcept { return c_ != nullptr; }
	mg_mqtt *get() const noexcept { return c_; }

	/* Handlers: before start(). Each returns 0 or an MG_MQTT_ERR_* code
	 * (MG_MQTT_ERR_STARTED after start, _FILTER for a bad filter). */
	int on_topic(std::string_view filter, message_handler h)
	{
		if (c_ == nullptr)
			return MG_MQTT_ERR_INVALID;
		std::string f(filter);
		st_->topics.push_back(entry{this, std::move(h)});
		int rc = mg_mqtt_on_topic(c_, f.c_str(), on_message_c,
		                          &st_->topics.back());
		if (rc != 0)
			st_->topics.pop_back();
		return rc;
	}
	/* Every message no topic handler took. */
	int on_message(message_handler h)
	{
		if (c_ == nullptr)
			return MG_MQTT_ERR_INVALID;
		st_->any = entry{this, std::move(h)};
		return mg_mqtt_on_message(c_, on_message_c, &st_->any);
	}
	int on_connect(connect_handler h)
	{
		if (c_ == nullptr)
			return MG_MQTT_ERR_INVALID;
		st_->connect = std::move(h);
		return mg_mqtt_on_connect(c_, on_connect_c, this);
	}
	int on_log(log_handler h)
	{
		if (c_ == nullptr)
			return MG_MQTT_ERR_INVALID;
		st_->log = std::move(h);
		return mg_mqtt_on_log(c_, on_log_c, this);
	}
	/* Told what a handler threw (after it was caught); noexcept in spirit:
	 * what this one throws is dropped. */
	void on_exception(exception_handler h) { st_->exception = std::move(h); }

	/* Starts on a CivetServer (anything with getContext()), or on a
	 * CivetWeb context, with the client's options (options::mqtt). error
	 * (may be nullptr) gets the sentence on failure. Returns 0 or an
	 * MG_MQTT_ERR_* code, as mg_mqtt_start(). */
	template <class Server>
	int start(const Server &server, const std::vector<std::string> &opts,
	          std::string *error = nullptr)
	{
		return start(server.getContext(), opts, error);
	}
	int start(const mg_context *ctx, const std::vector<std::string> &opts,
	          std::string *error = nullptr)
	{
		std::vector<const char *> list;
		char err[1024] = "";
		if (c_ == nullptr)
			return MG_MQTT_ERR_INVALID;
		list.reserve(opts.size() + 1);
		for (const std::string &s : opts)
			list.push_back(s.c_str());
		list.push_back(nullptr);
		int rc = mg_mqtt_start(c_, ctx, list.data(), err, sizeof(err));
		if (rc != 0 && error != nullptr)
			*error = err;
		return rc;
	}

	/* An id > 0 (queued), or an MG_MQTT_ERR_* code; see mg_mqtt_publish().
	 * Any thread. */
	int publish(std::string_view topic, std::string_view payload, int qos = 0,
	            bool retain = false) noexcept
	{
		cstring t(topic);
		if (t.get() == nullptr)
			return MG_MQTT_ERR_NOMEM;
		return mg_mqtt_publish(c_, t.get(), payload.data(), payload.size(),
		                       qos, retain ? 1 : 0);
	}
	/* An id > 0, or an MG_MQTT_ERR_* code; see mg_mqtt_subscribe(). */
	int subscribe(std::string_view filter, int qos = 0) noexcept
	{
		cstring f(filter);
		return f.get() != nullptr ? mg_mqtt_subscribe(c_, f.get(), qos)
		                          : MG_MQTT_ERR_NOMEM;
	}
	bool connected() const noexcept
	{
		return c_ != nullptr && mg_mqtt_is_connected(c_) == 1;
	}
	/* Handler exceptions caught so far. */
	long exceptions_caught() const noexcept { return st_->caught.load(); }

	/* Stops and frees the C client (the destructor does it too). Call it
	 * after the CivetServer is gone (or closed), never from a handler. */
	int stop() noexcept
	{
		int rc = mg_mqtt_stop(c_);
		if (rc == 0)
			c_ = nullptr;
		return rc;
	}

private:
	struct entry {
		client *self;
		message_handler fn;
	};
	struct state {
		std::list<entry> topics; /* stable addresses: the C side holds them */
		entry any{nullptr, nullptr};
		connect_handler connect;
		log_handler log;
		exception_handler exception;
		std::atomic<long> caught{0};
	};

	/* A string_view as a NUL-terminated copy, without exceptions: on the
	 * stack when short, else on the heap; get() is nullptr out of memory. */
	class cstring {
	public:
		explicit cstring(std::string_view s) noexcept
		    : heap_(s.size() < sizeof(buf_) ? nullptr
		                                    : new (std::nothrow) char[s.size() + 1])
		{
			p_ = s.size() < sizeof(buf_) ? buf_ : heap_.get();
			if (p_ != nullptr) {
				s.copy(p_, s.size());
				p_[s.size()] = '\0';
			}
		}
		const char *get() const noexcept { return p_; }

	private:
		char buf_[256];
		std::unique_ptr<char[]> heap_;
		char *p_;
	};

	/* Runs a handler; nothing it throws leaves this function. */
	template <class F> void guarded(F &&f) noexcept
	{
		try {
			f();
		} catch (const std::exception &e) {
			caught(e.what());
		} catch (...) {
			caught("an exception not derived from std::exception");
		}
	}
	void caught(const char *what) noexcept
	{
		st_->caught++;
		try {
			std::string text = std::string("a handler threw: ") + what;
			if (st_->exception)
				st_->exception(what);
			else if (st_->log)
				st_->log(MG_MQTT_LOG_ERROR, text);
			else
				std::fprintf(stderr, "civetweb-mqtt: %s\n", text.c_str());
		} catch (...) {
			/* the reporting failed too: counted, nothing more */
		}
	}

	static void on_message_c(mg_mqtt *, const mg_mqtt_message *m, void *ud)
	{
		entry *e = static_cast<entry *>(ud);
		message msg{std::string_view(m->topic, m->topic_len),
		            std::string_view(static_cast<const char *>(m->payload),
		                             m->payload_len),
		            m->qos, m->retain != 0, m->dup != 0, m};
		e->self->guarded([&] { e->fn(msg); });
	}
	static void on_connect_c(mg_mqtt *, const mg_mqtt_connect_info *info,
	                         void *ud)
	{
		client *self = static_cast<client *>(ud);
		self->guarded(
		    [&] { self->st_->connect(info->connected != 0, info->message); });
	}
	static void on_log_c(mg_mqtt *, int level, const char *text, void *ud)
	{
		client *self = static_cast<client *>(ud);
		try {
			self->st_->log(level, text);
		} catch (...) {
			self->st_->caught++; /* not reported again through on_log */
		}
	}

	mg_mqtt *c_;
	std::unique_ptr<state> st_;
};

} // namespace civetweb_mqtt

#endif /* CIVETWEB_MQTT_HPP */
