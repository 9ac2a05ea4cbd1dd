-- wrk connects to 127.0.0.1 while the URL's host (a.bench.test) stays in the SNI and Host header,
-- so no /etc/hosts entry is needed.
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
