// A plain Java client of a length:2 server (tests/test_interop.py runs it):
// each argument after HOST PORT is sent as DataOutputStream.writeShort(n)
// then write(bytes), all of them before reading any reply; then each reply
// is read with DataInputStream.readUnsignedShort() and readFully, and
// printed on a line of its own.  Exits 0 once every reply is read and the
// server has closed after the client's half-close.

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

public final class LengthClient {
    private LengthClient() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: LengthClient HOST PORT MESSAGE...");
            System.exit(2);
        }
        try (Socket socket = new Socket(args[0], Integer.parseInt(args[1]))) {
            socket.setSoTimeout(10000);
            DataOutputStream out = new DataOutputStream(socket.getOutputStream());
            for (int i = 2; i < args.length; i++) {
                byte[] payload = args[i].getBytes(StandardCharsets.UTF_8);
                out.writeShort(payload.length);
                out.write(payload);
            }
            out.flush();
            socket.shutdownOutput();
            DataInputStream in = new DataInputStream(socket.getInputStream());
            for (int i = 2; i < args.length; i++) {
                byte[] reply = new byte[in.readUnsignedShort()];
                in.readFully(reply);
                System.out.println(new String(reply, StandardCharsets.UTF_8));
            }
            if (in.read() != -1) {
                System.err.println("more bytes after the last reply");
                System.exit(1);
            }
        }
    }
}
