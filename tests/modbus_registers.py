# modbus_registers.py
import struct

from tcpcomm.framers import exceptionResponse

REGISTERS = [100 * n for n in range(10)]  # holding registers 0 to 9


def handle(request: bytes) -> bytes:
    """Answer MODBUS function 3, read holding registers, from REGISTERS."""
    transaction, _, _, unit, function, start, count = struct.unpack(
        ">HHHBBHH", request[:12]
    )
    if function != 3:
        return exceptionResponse(request, 0x01)  # illegal function
    values = REGISTERS[start : start + count]
    if count < 1 or len(values) != count:
        return exceptionResponse(request, 0x02)  # illegal data address
    body = struct.pack(f">BBB{count}H", unit, function, 2 * count, *values)
    return struct.pack(">HHH", transaction, 0, len(body)) + body
