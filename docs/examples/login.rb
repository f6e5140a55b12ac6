#!/usr/bin/env ruby
# login.rb: the same check as a Ruby CGI script.
require 'openssl'

USER_KEYS = { 'alice' => OpenSSL::KDF.pbkdf2_hmac('correct horse battery staple',
                salt: 'tcpcrypt-auth-v1:alice', iterations: 200_000, length: 32,
                hash: 'SHA256') }

def reply(status, text)
  print "Status: #{status}\r\nContent-Type: text/plain\r\n\r\n#{text}\n"
  exit
end

sid_hex = ENV['TCP_CRYPT_SESSID']                # unset on plain TCP
role    = ENV['TCP_CRYPT_ROLE']                  # this server's role
reply(403, 'not a tcpcrypt connection') unless sid_hex && %w[A B].include?(role)
peer_role = role == 'A' ? 'B' : 'A'
user  = ENV.fetch('HTTP_X_TCPCRYPT_USER', '')
proof = ENV.fetch('HTTP_X_TCPCRYPT_PROOF', '').downcase
key   = USER_KEYS[user]

msg = "tcpcrypt-auth-v1\0" + peer_role + [sid_hex].pack('H*')
expected = OpenSSL::HMAC.hexdigest('SHA256', key || '', msg)
reply(403, 'proof does not match this connection') unless key && OpenSSL.secure_compare(expected, proof)
reply(200, "welcome, #{user}")
