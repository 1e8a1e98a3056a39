import numpy as np
import numpy.typing as npt

__test__: dict[str, str]


def set_dr_macs(buf: npt.NDArray[np.uint8], off: npt.NDArray[np.uint32], caplen: npt.NDArray[np.uint32],
                linktype: npt.NDArray[np.uint16], verdict: npt.NDArray[np.uint8], aux: npt.NDArray[np.int32],
                macs: npt.NDArray[np.uint8], has_mac: npt.NDArray[np.uint8]) -> int: ...
def encap_tunnel(buf: npt.NDArray[np.uint8], off: npt.NDArray[np.uint32], caplen: npt.NDArray[np.uint32],
                 wirelen: npt.NDArray[np.uint32], linktype: npt.NDArray[np.uint16],
                 verdict: npt.NDArray[np.uint8], aux: npt.NDArray[np.int32],
                 dest_addr: npt.NDArray[np.uint8], dest_af: npt.NDArray[np.uint8],
                 src4: npt.NDArray[np.uint8], src6: npt.NDArray[np.uint8]
                 ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]: ...
