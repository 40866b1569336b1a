// distributed/tcp_store.cpp — the TCP store (POSIX sockets): rank 0's server thread accepts the
// other ranks, one thread per connection; a request is 'S' key value (set) or 'G' key (get: the
// answer comes once the key is set). Strings travel as a 64-bit length and the bytes.
#include "distributed/tcp_store.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "cudl/error.hpp"
#include "distributed/socket_io.hpp"

namespace cudl::distributed {
namespace {

using net::read_all;
using net::write_all;

bool write_string(int fd, const std::string& s) {
  const uint64_t n = s.size();
  return write_all(fd, &n, sizeof n) && write_all(fd, s.data(), s.size());
}

bool read_string(int fd, std::string* s, const std::chrono::steady_clock::time_point* deadline = nullptr,
                 bool* timed_out = nullptr) {
  uint64_t n = 0;
  if (!read_all(fd, &n, sizeof n, deadline, timed_out) || n > (uint64_t(1) << 30)) return false;
  s->resize(n);
  return n == 0 || read_all(fd, s->data(), n, deadline, timed_out);
}

std::string seconds(std::chrono::milliseconds t) {
  return t.count() % 1000 == 0 ? std::to_string(t.count() / 1000) + " s" : std::to_string(t.count()) + " ms";
}

}  // namespace

std::string TcpStore::where() const {
  return "the TCP store at MASTER_ADDR:MASTER_PORT = " + host_ + ":" + std::to_string(port_);
}

std::unique_ptr<TcpStore> TcpStore::serve(int port, const std::string& who) {
  std::unique_ptr<TcpStore> s(new TcpStore);
  s->server_ = true;
  s->who_ = who;
  s->host_ = "0.0.0.0";
  s->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->fd_ < 0) CUDL_FAIL(who, ": cannot create the TCP store's socket: ", std::strerror(errno));
  const int one = 1;
  (void)::setsockopt(s->fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(s->fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s->fd_, 128) != 0)
    CUDL_FAIL(who, " cannot serve the TCP store on MASTER_PORT=", port, ": ", std::strerror(errno),
              errno == EADDRINUSE ? " (another job or program uses that port: choose another MASTER_PORT)" : "");
  socklen_t len = sizeof a;
  (void)::getsockname(s->fd_, reinterpret_cast<sockaddr*>(&a), &len);
  s->port_ = ntohs(a.sin_port);
  if (::pipe2(s->wake_, O_CLOEXEC) != 0) CUDL_FAIL(who, ": pipe: ", std::strerror(errno));
  TcpStore* self = s.get();
  s->accept_thread_ = std::thread([self] {
    for (;;) {
      pollfd pf[2] = {{self->fd_, POLLIN, 0}, {self->wake_[0], POLLIN, 0}};
      if (::poll(pf, 2, -1) < 0 && errno != EINTR) return;
      if (pf[1].revents) return;
      if (!(pf[0].revents & POLLIN)) continue;
      const int c = ::accept4(self->fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::lock_guard<std::mutex> lk(self->mu_);
      if (self->stopping_) {
        ::close(c);
        return;
      }
      self->connections_.push_back(c);
      self->threads_.emplace_back([self, c] { self->serve_connection(c); });
    }
  });
  return s;
}

void TcpStore::serve_connection(int fd) {
  for (;;) {
    char op = 0;
    std::string key, value;
    if (!read_all(fd, &op, 1, nullptr) || !read_string(fd, &key)) return;
    if (op == 'S') {
      if (!read_string(fd, &value)) return;
      set(key, value);
    } else if (op == 'G') {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || values_.count(key); });
      if (stopping_) return;
      value = values_[key];
      lk.unlock();
      if (!write_string(fd, value)) return;
    } else {
      return;
    }
  }
}

std::unique_ptr<TcpStore> TcpStore::connect(const std::string& host, int port, std::chrono::milliseconds timeout,
                                            const std::string& who) {
  std::unique_ptr<TcpStore> s(new TcpStore);
  s->host_ = host;
  s->port_ = port;
  s->who_ = who;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string why;
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int g = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (g != 0) {
      why = std::string("cannot resolve MASTER_ADDR=") + host + ": " + gai_strerror(g);
      if (g != EAI_AGAIN) CUDL_FAIL(who, " could not connect to ", s->where(), ": ", why);
    }
    for (addrinfo* ai = res; ai && s->fd_ < 0; ai = ai->ai_next) {
      const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        s->fd_ = fd;
      } else {
        why = std::strerror(errno);
        ::close(fd);
      }
    }
    if (res) ::freeaddrinfo(res);
    if (s->fd_ >= 0) break;
    if (std::chrono::steady_clock::now() >= deadline)
      CUDL_FAIL(who, " could not connect to ", s->where(), " within ", seconds(timeout), ": ", why,
                " (rank 0 serves it: has it started, and is that address reachable from here?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int one = 1;
  (void)::setsockopt(s->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

TcpStore::~TcpStore() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    cv_.notify_all();
    for (int c : connections_) ::shutdown(c, SHUT_RDWR);
  }
  if (accept_thread_.joinable()) {
    const char b = 1;
    (void)!::write(wake_[1], &b, 1);
    // The accept thread may add connection threads until it stops: join it first.
    accept_thread_.join();
    for (auto& t : threads_) t.join();
    for (int c : connections_) ::close(c);
  }
  for (int w : wake_)
    if (w >= 0) ::close(w);
  if (fd_ >= 0) ::close(fd_);
}

void TcpStore::set(const std::string& key, const std::string& value) {
  if (server_) {
    std::lock_guard<std::mutex> lk(mu_);
    values_[key] = value;
    cv_.notify_all();
    return;
  }
  const char op = 'S';
  if (!write_all(fd_, &op, 1) || !write_string(fd_, key) || !write_string(fd_, value))
    CUDL_FAIL(who_, ": setting '", key, "' in ", where(), " failed: the connection closed (did rank 0 exit?)");
}

std::string TcpStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  if (server_) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return values_.count(key) > 0; }))
      CUDL_FAIL(who_, ": no rank set '", key, "' in the TCP store it serves on MASTER_PORT=", port_, " within ",
                seconds(timeout));
    return values_[key];
  }
  const char op = 'G';
  if (!write_all(fd_, &op, 1) || !write_string(fd_, key))
    CUDL_FAIL(who_, ": asking ", where(), " for '", key, "' failed: the connection closed (did rank 0 exit?)");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string value;
  bool timed_out = false;
  if (!read_string(fd_, &value, &deadline, &timed_out))
    CUDL_FAIL(who_, ": ", where(),
              timed_out ? " did not have '" + key + "' within " + seconds(timeout) +
                              " (rank 0 sets it: is it still starting, or stuck?)"
                        : " closed the connection while '" + key + "' was awaited (did rank 0 exit?)");
  return value;
}

}  // namespace cudl::distributed
