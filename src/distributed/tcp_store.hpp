// distributed/tcp_store.hpp — the small key-value store through which the ranks of a job launched
// as processes meet (torchrun's TCPStore, reduced to what cudl needs): rank 0 serves it on
// MASTER_PORT, the other ranks connect to MASTER_ADDR:MASTER_PORT; get waits until a key is set.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cudl::distributed {

class TcpStore {
 public:
  /// Serves the store on `port` (all interfaces; 0: a free port, see port()). `who` names the
  /// caller in errors ("rank 0 of 2").
  static std::unique_ptr<TcpStore> serve(int port, const std::string& who);
  /// Connects to the store at host:port, retrying until `timeout` passes; the error names
  /// MASTER_ADDR:MASTER_PORT, the address and `who`.
  static std::unique_ptr<TcpStore> connect(const std::string& host, int port, std::chrono::milliseconds timeout,
                                           const std::string& who);
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::string& value);
  /// The value of key, waiting up to `timeout` for some rank to set it.
  std::string get(const std::string& key, std::chrono::milliseconds timeout);
  int port() const { return port_; }

 private:
  TcpStore() = default;
  void serve_connection(int fd);
  std::string where() const;

  bool server_ = false;
  std::string host_, who_;
  int port_ = 0;
  int fd_ = -1;             // server: the listening socket; client: the connection
  int wake_[2] = {-1, -1};  // server: a pipe that stops the accept loop
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, std::string> values_;  // server
  std::vector<int> connections_;
  std::thread accept_thread_;
  std::vector<std::thread> threads_;  // one per connection
};

}  // namespace cudl::distributed
